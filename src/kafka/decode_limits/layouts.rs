//! The layouts of the answers we read: the schemas of Kafka's messages, written down for the
//! versions we speak (`versions::ours`), and of the consumer protocol's bytes.

use kafka_protocol::messages::ApiKey;

/// One field of a message, as laid out on the wire.
#[derive(Debug, Clone, Copy)]
pub(super) enum F {
    /// A fixed-size field: an integer, a boolean, a uuid.
    Fixed(usize),
    /// A string, nullable or not (a 16-bit length outside flexible versions).
    Str,
    /// Bytes or records, nullable or not (a 32-bit length outside flexible versions).
    Bytes,
    /// An array of fixed-size elements.
    Ints(usize),
    /// An array of strings.
    Strings,
    /// An array of structures.
    Array(&'static S),
}

/// A structure: its fields, each from a version on (and until one), and the tagged fields the
/// crate decodes in the stream, by tag.
#[derive(Debug)]
pub(super) struct S {
    pub(super) fields: &'static [(i16, i16, F)],
    pub(super) tags: &'static [(u32, i16, Tag)],
}

/// The content of a known tagged field.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tag {
    Field(F),
    Struct(&'static S),
}

/// All versions.
pub(super) const ALL: i16 = i16::MAX;
pub(super) const fn f(from: i16, kind: F) -> (i16, i16, F) {
    (from, ALL, kind)
}
pub(super) const fn until(from: i16, to: i16, kind: F) -> (i16, i16, F) {
    (from, to, kind)
}

pub(super) const I16: F = F::Fixed(2);
pub(super) const I32: F = F::Fixed(4);
pub(super) const I64: F = F::Fixed(8);
pub(super) const UUID: F = F::Fixed(16);
pub(super) const BOOL: F = F::Fixed(1);
pub(super) const STR: F = F::Str;

// ApiVersions v0 and v3.
pub(super) static API_VERSION: S = S {
    fields: &[f(0, I16), f(0, I16), f(0, I16)],
    tags: &[],
};
pub(super) static FEATURE: S = S {
    fields: &[f(0, STR), f(0, I16), f(0, I16)],
    tags: &[],
};
pub(super) static API_VERSIONS: S = S {
    fields: &[f(0, I16), f(0, F::Array(&API_VERSION)), f(1, I32)],
    tags: &[
        (0, 3, Tag::Field(F::Array(&FEATURE))),
        (1, 3, Tag::Field(I64)),
        (2, 3, Tag::Field(F::Array(&FEATURE))),
        (3, 3, Tag::Field(BOOL)),
    ],
};

// Metadata v12 and v13.
pub(super) static BROKER: S = S {
    fields: &[f(0, I32), f(0, STR), f(0, I32), f(0, STR)],
    tags: &[],
};
pub(super) static METADATA_PARTITION: S = S {
    fields: &[
        f(0, I16),
        f(0, I32),
        f(0, I32),
        f(0, I32),
        f(0, F::Ints(4)),
        f(0, F::Ints(4)),
        f(0, F::Ints(4)),
    ],
    tags: &[],
};
pub(super) static METADATA_TOPIC: S = S {
    fields: &[
        f(0, I16),
        f(0, STR),
        f(0, UUID),
        f(0, BOOL),
        f(0, F::Array(&METADATA_PARTITION)),
        f(0, I32),
    ],
    tags: &[],
};
pub(super) static METADATA: S = S {
    fields: &[
        f(0, I32),
        f(0, F::Array(&BROKER)),
        f(0, STR),
        f(0, I32),
        f(0, F::Array(&METADATA_TOPIC)),
        f(13, I16),
    ],
    tags: &[],
};

// Fetch v13.
pub(super) static EPOCH_END_OFFSET: S = S {
    fields: &[f(0, I32), f(0, I64)],
    tags: &[],
};
pub(super) static LEADER_AND_EPOCH: S = S {
    fields: &[f(0, I32), f(0, I32)],
    tags: &[],
};
pub(super) static SNAPSHOT_ID: S = S {
    fields: &[f(0, I64), f(0, I32)],
    tags: &[],
};
pub(super) static ABORTED: S = S {
    fields: &[f(0, I64), f(0, I64)],
    tags: &[],
};
pub(super) static FETCH_PARTITION: S = S {
    fields: &[
        f(0, I32),
        f(0, I16),
        f(0, I64),
        f(0, I64),
        f(0, I64),
        f(0, F::Array(&ABORTED)),
        f(0, I32),
        f(0, F::Bytes),
    ],
    tags: &[
        (0, 12, Tag::Struct(&EPOCH_END_OFFSET)),
        (1, 12, Tag::Struct(&LEADER_AND_EPOCH)),
        (2, 12, Tag::Struct(&SNAPSHOT_ID)),
    ],
};
pub(super) static FETCH_TOPIC: S = S {
    fields: &[f(0, UUID), f(0, F::Array(&FETCH_PARTITION))],
    tags: &[],
};
pub(super) static NODE_ENDPOINT: S = S {
    fields: &[f(0, I32), f(0, STR), f(0, I32), f(0, STR)],
    tags: &[],
};
pub(super) static FETCH: S = S {
    fields: &[
        f(0, I32),
        f(0, I16),
        f(0, I32),
        f(0, F::Array(&FETCH_TOPIC)),
    ],
    tags: &[(0, 16, Tag::Field(F::Array(&NODE_ENDPOINT)))],
};

// ListOffsets v7.
pub(super) static LIST_OFFSETS_PARTITION: S = S {
    fields: &[f(0, I32), f(0, I16), f(0, I64), f(0, I64), f(0, I32)],
    tags: &[],
};
pub(super) static LIST_OFFSETS_TOPIC: S = S {
    fields: &[f(0, STR), f(0, F::Array(&LIST_OFFSETS_PARTITION))],
    tags: &[],
};
pub(super) static LIST_OFFSETS: S = S {
    fields: &[f(0, I32), f(0, F::Array(&LIST_OFFSETS_TOPIC))],
    tags: &[],
};

// Produce v3 to v12.
pub(super) static RECORD_ERROR: S = S {
    fields: &[f(0, I32), f(0, STR)],
    tags: &[],
};
pub(super) static PRODUCE_PARTITION: S = S {
    fields: &[
        f(0, I32),
        f(0, I16),
        f(0, I64),
        f(2, I64),
        f(5, I64),
        f(8, F::Array(&RECORD_ERROR)),
        f(8, STR),
    ],
    tags: &[(0, 10, Tag::Struct(&LEADER_AND_EPOCH))],
};
pub(super) static PRODUCE_TOPIC: S = S {
    fields: &[
        until(0, 12, STR),
        f(13, UUID),
        f(0, F::Array(&PRODUCE_PARTITION)),
    ],
    tags: &[],
};
pub(super) static PRODUCE: S = S {
    fields: &[f(0, F::Array(&PRODUCE_TOPIC)), f(1, I32)],
    tags: &[(0, 10, Tag::Field(F::Array(&NODE_ENDPOINT)))],
};

// The group protocol and offsets.
pub(super) static INIT_PRODUCER_ID: S = S {
    fields: &[f(0, I32), f(0, I16), f(0, I64), f(0, I16)],
    tags: &[],
};
pub(super) static FIND_COORDINATOR: S = S {
    fields: &[
        f(0, I32),
        f(0, I16),
        f(0, STR),
        f(0, I32),
        f(0, STR),
        f(0, I32),
    ],
    tags: &[],
};
pub(super) static JOIN_MEMBER: S = S {
    fields: &[f(0, STR), f(0, STR), f(0, F::Bytes)],
    tags: &[],
};
pub(super) static JOIN_GROUP: S = S {
    fields: &[
        f(0, I32),
        f(0, I16),
        f(0, I32),
        f(0, STR),
        f(0, STR),
        f(0, STR),
        // v9: skip_assignment, after the leader (KIP-814).
        f(9, F::Fixed(1)),
        f(0, STR),
        f(0, F::Array(&JOIN_MEMBER)),
    ],
    tags: &[],
};
pub(super) static HEARTBEAT: S = S {
    fields: &[f(0, I32), f(0, I16)],
    tags: &[],
};
pub(super) static LEAVE_MEMBER: S = S {
    fields: &[f(0, STR), f(0, STR), f(0, I16)],
    tags: &[],
};
pub(super) static LEAVE_GROUP: S = S {
    fields: &[f(0, I32), f(0, I16), f(0, F::Array(&LEAVE_MEMBER))],
    tags: &[],
};
pub(super) static SYNC_GROUP: S = S {
    fields: &[f(0, I32), f(0, I16), f(0, STR), f(0, STR), f(0, F::Bytes)],
    tags: &[],
};
pub(super) static DESCRIBED_MEMBER: S = S {
    fields: &[
        f(0, STR),
        f(0, STR),
        f(0, STR),
        f(0, STR),
        f(0, F::Bytes),
        f(0, F::Bytes),
    ],
    tags: &[],
};
pub(super) static DESCRIBED_GROUP: S = S {
    fields: &[
        f(0, I16),
        f(0, STR),
        f(0, STR),
        f(0, STR),
        f(0, STR),
        f(0, F::Array(&DESCRIBED_MEMBER)),
        f(0, I32),
    ],
    tags: &[],
};
pub(super) static DESCRIBE_GROUPS: S = S {
    fields: &[f(0, I32), f(0, F::Array(&DESCRIBED_GROUP))],
    tags: &[],
};
pub(super) static COMMIT_PARTITION: S = S {
    fields: &[f(0, I32), f(0, I16)],
    tags: &[],
};
pub(super) static COMMIT_TOPIC: S = S {
    fields: &[f(0, STR), f(0, F::Array(&COMMIT_PARTITION))],
    tags: &[],
};
pub(super) static OFFSET_COMMIT: S = S {
    fields: &[f(0, I32), f(0, F::Array(&COMMIT_TOPIC))],
    tags: &[],
};
pub(super) static OFFSET_FETCH_PARTITION: S = S {
    fields: &[f(0, I32), f(0, I64), f(0, I32), f(0, STR), f(0, I16)],
    tags: &[],
};
pub(super) static OFFSET_FETCH_TOPIC: S = S {
    fields: &[f(0, STR), f(0, F::Array(&OFFSET_FETCH_PARTITION))],
    tags: &[],
};
pub(super) static OFFSET_FETCH: S = S {
    fields: &[f(0, I32), f(0, F::Array(&OFFSET_FETCH_TOPIC)), f(0, I16)],
    tags: &[],
};

// The consumer protocol (never flexible), v0 to v3.
pub(super) static TOPIC_PARTITIONS: S = S {
    fields: &[f(0, STR), f(0, F::Ints(4))],
    tags: &[],
};
pub(super) static SUBSCRIPTION: S = S {
    fields: &[
        f(0, F::Strings),
        f(0, F::Bytes),
        f(1, F::Array(&TOPIC_PARTITIONS)),
        f(2, I32),
        f(3, STR),
    ],
    tags: &[],
};
pub(super) static ASSIGNMENT: S = S {
    fields: &[f(0, F::Array(&TOPIC_PARTITIONS)), f(0, F::Bytes)],
    tags: &[],
};

pub(super) static SASL_HANDSHAKE: S = S {
    fields: &[f(0, I16), f(0, F::Strings)],
    tags: &[],
};
pub(super) static SASL_AUTHENTICATE: S = S {
    fields: &[f(0, I16), f(0, STR), f(0, F::Bytes), f(1, I64)],
    tags: &[],
};

/// The layout of the answer to `api` at `version`, and whether that version is flexible
/// (compact lengths, tagged fields); `None` for a pair our client never sends.
pub(super) fn response_layout(api: ApiKey, version: i16) -> Option<(&'static S, bool)> {
    let (s, flexible_from, versions) = match api {
        ApiKey::ApiVersions => (&API_VERSIONS, 3, 0..=3),
        ApiKey::Metadata => (&METADATA, 9, 12..=13),
        ApiKey::Fetch => (&FETCH, 12, 13..=13),
        ApiKey::ListOffsets => (&LIST_OFFSETS, 6, 7..=7),
        ApiKey::Produce => (&PRODUCE, 9, 3..=12),
        ApiKey::InitProducerId => (&INIT_PRODUCER_ID, 2, 3..=5),
        ApiKey::FindCoordinator => (&FIND_COORDINATOR, 3, 3..=3),
        ApiKey::JoinGroup => (&JOIN_GROUP, 6, 7..=9),
        ApiKey::Heartbeat => (&HEARTBEAT, 4, 4..=4),
        ApiKey::LeaveGroup => (&LEAVE_GROUP, 4, 4..=4),
        ApiKey::SyncGroup => (&SYNC_GROUP, 4, 5..=5),
        ApiKey::DescribeGroups => (&DESCRIBE_GROUPS, 5, 5..=5),
        ApiKey::OffsetCommit => (&OFFSET_COMMIT, 8, 8..=8),
        ApiKey::OffsetFetch => (&OFFSET_FETCH, 6, 7..=7),
        ApiKey::SaslHandshake => (&SASL_HANDSHAKE, i16::MAX, 1..=1),
        ApiKey::SaslAuthenticate => (&SASL_AUTHENTICATE, 2, 1..=2),
        _ => return None,
    };
    // ApiVersions v0 is also read: a broker refusing our v3 answers in the v0 layout.
    let known = versions.contains(&version) || (api == ApiKey::ApiVersions && version == 0);
    known.then_some((s, version >= flexible_from))
}
