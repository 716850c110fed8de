//! Lease tokens split into the ones a driver made (read back into its own
//! form: a receipt handle, an ack id, a pair of numbers) and the ones it
//! did not, which name no lease it knows and are reported lost.

use crate::LeaseToken;

/// Tokens sorted by whether the driver can read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSplit<T> {
    /// Each readable token, in the caller's order, with what it reads as.
    pub known: Vec<(T, LeaseToken)>,
    /// Tokens of another form: no lease of this driver.
    pub lost: Vec<LeaseToken>,
}

impl<T> TokenSplit<T> {
    /// Sort `tokens` with `read`, which gives the driver's form of a token
    /// it made (e.g. [`LeaseToken::as_numbers`]).
    pub fn new(tokens: &[LeaseToken], read: impl Fn(&LeaseToken) -> Option<T>) -> Self {
        let mut known = Vec::with_capacity(tokens.len());
        let mut lost = Vec::new();
        for token in tokens {
            match read(token) {
                Some(value) => known.push((value, token.clone())),
                None => lost.push(token.clone()),
            }
        }
        Self { known, lost }
    }

    /// The tokens at 0-based `positions` of [`TokenSplit::known`] (positions
    /// out of range are ignored).
    pub fn at(&self, positions: impl IntoIterator<Item = usize>) -> Vec<LeaseToken> {
        positions
            .into_iter()
            .filter_map(|i| self.known.get(i).map(|(_, token)| token.clone()))
            .collect()
    }
}

impl TokenSplit<String> {
    /// Sort text tokens ([`LeaseToken::new`]): receipt handles, ack ids.
    pub fn text(tokens: &[LeaseToken]) -> Self {
        Self::new(tokens, |token| token.as_text().map(str::to_string))
    }

    /// The texts of the known tokens, in order.
    pub fn texts(&self) -> Vec<String> {
        self.known.iter().map(|(text, _)| text.clone()).collect()
    }

    /// The lost tokens, and the known ones whose text the backend called
    /// gone (`gone`): a settle call's [`crate::LeaseReport::lost`].
    pub fn lost_with(&self, gone: &[String]) -> Vec<LeaseToken> {
        let mut lost = self.lost.clone();
        lost.extend(self.tokens_of(gone));
        lost
    }

    /// The known tokens whose text is among `texts`.
    pub fn tokens_of(&self, texts: &[String]) -> Vec<LeaseToken> {
        self.known
            .iter()
            .filter(|(text, _)| texts.contains(text))
            .map(|(_, token)| token.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_tokens_are_lost_and_known_ones_keep_their_order() {
        let tokens = [
            LeaseToken::new("b"),
            LeaseToken::from_numbers(1, 2),
            LeaseToken::new("a"),
        ];
        let split = TokenSplit::text(&tokens);
        assert_eq!(split.texts(), ["b", "a"]);
        assert_eq!(split.lost, [tokens[1].clone()]);
        assert_eq!(split.tokens_of(&["a".to_string()]), [tokens[2].clone()]);
        assert_eq!(
            split.lost_with(&["a".to_string()]),
            [tokens[1].clone(), tokens[2].clone()]
        );
        let numbers = TokenSplit::new(&tokens, LeaseToken::as_numbers);
        assert_eq!(numbers.known, [((1, 2), tokens[1].clone())]);
        assert_eq!(numbers.at([0, 5]), [tokens[1].clone()]);
    }
}
