//! Transaction IDs unique across nodes and across restarts: `epoch | node index |
//! sequence`. The node index is the node's place in the sorted cluster (so the ID also
//! names the transaction's coordinator, whom an in-doubt participant asks); the epoch is
//! durable and grows at every start, so a restarted node never issues an ID again.

use crate::proto::TxId;

const SEQ_BITS: u32 = 24;
const INDEX_BITS: u32 = 16;

/// The largest sequence number of an epoch; the next ID begins a new epoch.
pub(crate) const SEQ_MAX: u32 = (1 << SEQ_BITS) - 1;
/// The largest epoch.
pub(crate) const EPOCH_MAX: u32 = (1 << (64 - SEQ_BITS - INDEX_BITS)) - 1;

/// The ID of sequence `seq` of `epoch` at the node of cluster index `index`.
pub(crate) fn make(epoch: u32, index: u16, seq: u32) -> TxId {
    assert!(
        epoch <= EPOCH_MAX && seq <= SEQ_MAX,
        "transaction ID out of range"
    );
    (u64::from(epoch) << (SEQ_BITS + INDEX_BITS)) | (u64::from(index) << SEQ_BITS) | u64::from(seq)
}

/// The cluster index of the node that issued `txid` (its coordinator).
pub(crate) fn index_of(txid: TxId) -> usize {
    ((txid >> SEQ_BITS) & ((1 << INDEX_BITS) - 1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_node_and_differ_across_epochs_nodes_and_sequences() {
        let a = make(1, 3, 1);
        assert_eq!(index_of(a), 3);
        assert_eq!(
            index_of(make(EPOCH_MAX, u16::MAX, SEQ_MAX)),
            u16::MAX as usize
        );
        let ids = [a, make(2, 3, 1), make(1, 4, 1), make(1, 3, 2)];
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
