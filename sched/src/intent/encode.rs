//! The bincode encoding of [`PlacementIntent`]: the derived one, field by
//! field in declaration order, except that `count` and `shard` share one
//! leading tag byte where the derived `Option<u32>` has its `0`/`1`:
//!
//! | tag | count     | shard |
//! |-----|-----------|-------|
//! | 0   | `None`    | false |
//! | 1   | `Some(n)` | false |
//! | 2   | `Some(n)` | true  |
//! | 3   | `None`    | true  |
//!
//! `n` follows the tag when present, as the derived encoding writes it. So
//! an unsharded intent encodes byte for byte as it did before `shard`
//! existed, and every stored intent (Raft log, snapshots, an edge's
//! persisted assignments) still decodes. An older binary refuses tags 2
//! and 3 ("unexpected variant") instead of silently running a sharded
//! workload unsharded.

use bincode::de::{BorrowDecoder, Decoder};
use bincode::enc::Encoder;
use bincode::error::{AllowedEnumVariants, DecodeError, EncodeError};
use bincode::{BorrowDecode, Decode, Encode};

use super::PlacementIntent;

impl Encode for PlacementIntent {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        let tag: u8 = match (self.count, self.shard) {
            (None, false) => 0,
            (Some(_), false) => 1,
            (Some(_), true) => 2,
            (None, true) => 3,
        };
        tag.encode(e)?;
        if let Some(n) = self.count {
            n.encode(e)?;
        }
        self.per_node.encode(e)?;
        self.pools.encode(e)?;
        self.constraints.encode(e)?;
        self.affinity.encode(e)?;
        self.anti_affinity.encode(e)?;
        self.co_locate_with.encode(e)?;
        self.keep_apart_from.encode(e)?;
        self.spread.encode(e)?;
        self.on_disconnect.encode(e)?;
        self.replace_after.encode(e)
    }
}

impl<Context> Decode<Context> for PlacementIntent {
    fn decode<D: Decoder<Context = Context>>(d: &mut D) -> Result<Self, DecodeError> {
        let (has_count, shard) = match u8::decode(d)? {
            0 => (false, false),
            1 => (true, false),
            2 => (true, true),
            3 => (false, true),
            found => {
                return Err(DecodeError::UnexpectedVariant {
                    type_name: "PlacementIntent count/shard tag",
                    allowed: &AllowedEnumVariants::Range { min: 0, max: 3 },
                    found: u32::from(found),
                })
            }
        };
        let count = if has_count {
            Some(u32::decode(d)?)
        } else {
            None
        };
        Ok(PlacementIntent {
            count,
            shard,
            per_node: Decode::decode(d)?,
            pools: Decode::decode(d)?,
            constraints: Decode::decode(d)?,
            affinity: Decode::decode(d)?,
            anti_affinity: Decode::decode(d)?,
            co_locate_with: Decode::decode(d)?,
            keep_apart_from: Decode::decode(d)?,
            spread: Decode::decode(d)?,
            on_disconnect: Decode::decode(d)?,
            replace_after: Decode::decode(d)?,
        })
    }
}

impl<'de, Context> BorrowDecode<'de, Context> for PlacementIntent {
    fn borrow_decode<D: BorrowDecoder<'de, Context = Context>>(
        d: &mut D,
    ) -> Result<Self, DecodeError> {
        // Nothing borrows from the input: decode as owned.
        Decode::decode(d)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bincode::{Decode, Encode};

    use super::super::{LabelAffinity, LabelRule, OnDisconnect, Spread, WorkloadAffinity};
    use super::*;

    /// `PlacementIntent` as it was before `shard`, with the derived
    /// encoding: what the Raft logs and edges have stored.
    #[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
    struct Before {
        count: Option<u32>,
        per_node: bool,
        pools: Vec<String>,
        constraints: Vec<LabelRule>,
        affinity: Vec<LabelAffinity>,
        anti_affinity: Vec<LabelAffinity>,
        co_locate_with: Vec<WorkloadAffinity>,
        keep_apart_from: Vec<WorkloadAffinity>,
        spread: Vec<Spread>,
        on_disconnect: Option<OnDisconnect>,
        replace_after: Option<Duration>,
    }

    fn cfg() -> impl bincode::config::Config {
        bincode::config::standard()
    }

    fn samples() -> Vec<Before> {
        vec![
            Before::default(),
            Before {
                count: Some(300),
                pools: vec!["gpu".into()],
                constraints: vec![LabelRule {
                    label: "zone".into(),
                    value: Some("a".into()),
                    ..LabelRule::default()
                }],
                keep_apart_from: vec![WorkloadAffinity {
                    workload: "x".into(),
                    weight: 9,
                    hard: true,
                }],
                on_disconnect: Some(OnDisconnect::Replace),
                replace_after: Some(Duration::from_millis(30_500)),
                ..Before::default()
            },
            Before {
                per_node: true,
                ..Before::default()
            },
        ]
    }

    fn now_of(b: &Before) -> PlacementIntent {
        PlacementIntent {
            count: b.count,
            shard: false,
            per_node: b.per_node,
            pools: b.pools.clone(),
            constraints: b.constraints.clone(),
            affinity: b.affinity.clone(),
            anti_affinity: b.anti_affinity.clone(),
            co_locate_with: b.co_locate_with.clone(),
            keep_apart_from: b.keep_apart_from.clone(),
            spread: b.spread.clone(),
            on_disconnect: b.on_disconnect,
            replace_after: b.replace_after,
        }
    }

    #[test]
    fn unsharded_intents_keep_their_old_bytes_both_ways() {
        for b in samples() {
            let old = bincode::encode_to_vec(&b, cfg()).unwrap();
            let now = now_of(&b);
            assert_eq!(bincode::encode_to_vec(&now, cfg()).unwrap(), old, "{b:?}");
            let (back, used): (PlacementIntent, usize) =
                bincode::decode_from_slice(&old, cfg()).unwrap();
            assert_eq!((back, used), (now, old.len()));
        }
    }

    #[test]
    fn sharded_intents_round_trip_and_old_decoders_refuse_them() {
        for b in samples() {
            for count in [None, Some(7)] {
                let i = PlacementIntent {
                    count,
                    shard: true,
                    ..now_of(&b)
                };
                let bytes = bincode::encode_to_vec(&i, cfg()).unwrap();
                let (back, _): (PlacementIntent, usize) =
                    bincode::decode_from_slice(&bytes, cfg()).unwrap();
                assert_eq!(back, i);
                assert!(
                    bincode::decode_from_slice::<Before, _>(&bytes, cfg()).is_err(),
                    "an old binary must not read a sharded intent as unsharded"
                );
            }
        }
        let bad = [4u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(bincode::decode_from_slice::<PlacementIntent, _>(&bad, cfg()).is_err());
    }
}
