//! An item's place in a job, as the queue carries it: a label on the item
//! (which job, which sequence number) that the queue keeps and hands back
//! unread. What a job is, and what its items add up to, is the job layer's
//! ([`crate::job`]); the queue only carries the label, so that a driver can
//! store it in its own compact form.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The attribute naming an item's job.
pub const JOB_ATTRIBUTE: &str = "forloop-job";
/// The attribute holding an item's sequence number in its job (0-based).
pub const SEQ_ATTRIBUTE: &str = "forloop-seq";
/// The attribute holding an item's life ([`JobItem::life`]), on items put
/// back to work from the dead place; absent on an item's first life.
pub const LIFE_ATTRIBUTE: &str = "forloop-life";

/// An item's place in its job: [`crate::Item::job`], carried by
/// every delivery and task.
///
/// On the wire (a backend's message attributes) it travels as the two
/// attributes [`JOB_ATTRIBUTE`] and [`SEQ_ATTRIBUTE`]: a driver writes them
/// with [`crate::Item::wire_attributes`] and takes them back off with
/// [`JobItem::take_from`] (or [`crate::Item::from_wire`]), so that
/// attributes hold only an item's own everywhere else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobItem {
    /// The job.
    pub job: Arc<str>,
    /// Its sequence number.
    pub seq: u64,
    /// Which life of the item this is: 0 until it is first requeued from
    /// the dead place, then a number larger than every life before it (a
    /// requeue's Unix milliseconds, [`JobItem::next_life`]). A dead receipt
    /// carries it, so a ledger kept as facts merged in any order (the sheet
    /// ledger) tells a death the requeue un-counted from a later one.
    pub life: u64,
}

impl JobItem {
    /// An item of `job` at `seq`.
    pub fn new(job: impl Into<Arc<str>>, seq: u64) -> Self {
        Self {
            job: job.into(),
            seq,
            life: 0,
        }
    }

    /// This item in `life`.
    pub fn in_life(mut self, life: u64) -> Self {
        self.life = life;
        self
    }

    /// The life an item put back to work from the dead place starts: now
    /// (Unix ms), and in any case after this one.
    pub fn next_life(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        now.max(self.life + 1)
    }

    /// Take the job and sequence number out of attributes read off the
    /// wire, if the item has both and the sequence number reads: the two
    /// attributes are removed. A malformed pair (one of the two missing, a
    /// sequence number that is no number) is left in `attributes` and the
    /// item has no job. The name is shared with `known` when it is that
    /// one (a pull's items mostly are of one job), else kept there: one
    /// allocation per job, not per item.
    pub fn take_from(
        attributes: &mut BTreeMap<String, String>,
        known: &mut Option<Arc<str>>,
    ) -> Option<JobItem> {
        let seq = attributes.get(SEQ_ATTRIBUTE)?.parse().ok()?;
        let mut item = Self::shared(attributes.get(JOB_ATTRIBUTE)?, seq, known);
        attributes.remove(JOB_ATTRIBUTE);
        attributes.remove(SEQ_ATTRIBUTE);
        // A life that does not read is the first (it only orders deaths).
        if let Some(life) = attributes.remove(LIFE_ATTRIBUTE) {
            item.life = life.parse().unwrap_or(0);
        }
        Some(item)
    }

    /// An item of job `name` at `seq`, the name shared with `known` when it
    /// is that one, else kept there (see [`JobItem::take_from`]): for a
    /// driver that stores the job in its own form.
    pub fn shared(name: &str, seq: u64, known: &mut Option<Arc<str>>) -> JobItem {
        let job = match known {
            Some(job) if **job == *name => Arc::clone(job),
            _ => known.insert(Arc::from(name)).clone(),
        };
        JobItem { job, seq, life: 0 }
    }

    /// Write this job and sequence number into `attributes`, as they travel
    /// on the wire.
    pub fn stamp(&self, attributes: &mut BTreeMap<String, String>) {
        attributes.insert(JOB_ATTRIBUTE.to_string(), self.job.to_string());
        attributes.insert(SEQ_ATTRIBUTE.to_string(), self.seq.to_string());
        if self.life != 0 {
            attributes.insert(LIFE_ATTRIBUTE.to_string(), self.life.to_string());
        }
    }
}

/// `attributes` as they travel on the wire for an item of `job`: with the
/// job's two attributes when it has one (a copy), else as they are.
pub fn wire_attributes<'a>(
    job: Option<&JobItem>,
    attributes: &'a BTreeMap<String, String>,
) -> Cow<'a, BTreeMap<String, String>> {
    match job {
        Some(job) => {
            let mut stamped = attributes.clone();
            job.stamp(&mut stamped);
            Cow::Owned(stamped)
        }
        None => Cow::Borrowed(attributes),
    }
}

impl fmt::Display for JobItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.job, self.seq)
    }
}
