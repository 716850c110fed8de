//! Batches cut to what one backend request takes: a number of entries and,
//! where the backend also caps a request's bytes, a size.

use std::future::Future;

use futures_util::future::join_all;

use crate::QueueError;

/// `items` cut, in order, into runs of at most `max_len` entries whose
/// `size`s add up to at most `max_bytes`. An item larger than `max_bytes`
/// travels alone (the caller checked sizes already).
pub fn chunks_within<T>(
    items: impl IntoIterator<Item = T>,
    max_len: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let max_len = max_len.max(1);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let item_size = size(&item);
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < max_len && bytes + item_size <= max_bytes => {
                bytes += item_size;
                chunk.push(item);
            }
            _ => {
                bytes = item_size;
                chunks.push(vec![item]);
            }
        }
    }
    chunks
}

/// Run `call` on every run of at most `size` of `items`, all at once, and
/// gather what each returns, in order. The first failure is the answer.
pub async fn each_chunk<'a, T, R, F, Fut>(
    items: &'a [T],
    size: usize,
    call: F,
) -> Result<Vec<R>, QueueError>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: Future<Output = Result<Vec<R>, QueueError>>,
{
    let mut out = Vec::new();
    for result in join_all(items.chunks(size.max(1)).map(call)).await {
        out.extend(result?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_respect_count_and_bytes_and_keep_order() {
        let chunks = chunks_within([4, 4, 4, 1, 9, 1], 2, 8, |n| *n);
        assert_eq!(chunks, [vec![4, 4], vec![4, 1], vec![9], vec![1]]);
        assert!(chunks_within(Vec::<u8>::new(), 10, 10, |_| 1).is_empty());
    }

    #[tokio::test]
    async fn every_chunk_runs_and_the_results_stay_in_order() {
        let items: Vec<u32> = (0..25).collect();
        let sums = each_chunk(&items, 10, |chunk| async move {
            Ok(vec![chunk.iter().sum::<u32>()])
        })
        .await
        .unwrap();
        assert_eq!(sums, [45, 145, 110]);
        let failed = each_chunk(&items, 10, |chunk| async move {
            if chunk[0] == 10 {
                Err(QueueError::unsupported("the second chunk"))
            } else {
                Ok(Vec::<u32>::new())
            }
        })
        .await;
        assert!(failed.is_err());
    }
}
