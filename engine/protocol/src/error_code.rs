//! Kafka's error codes: the one table of them in shardlog.
//!
//! The numbers are the wire protocol's (Apache Kafka's `Errors` enumeration). Only the broker's
//! API handlers (`broker::api`) should need these: a layer below returns its own error enum,
//! and the handler maps it to a code here. A unit test holds every entry against the names and
//! numbers of the `kafka-protocol` crate, so a typo cannot reach the wire.

/// The type every code has on the wire.
pub type ErrorCode = i16;

pub const UNKNOWN_SERVER_ERROR: ErrorCode = -1;
pub const NONE: ErrorCode = 0;
pub const OFFSET_OUT_OF_RANGE: ErrorCode = 1;
pub const CORRUPT_MESSAGE: ErrorCode = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode = 3;
pub const LEADER_NOT_AVAILABLE: ErrorCode = 5;
pub const NOT_LEADER_OR_FOLLOWER: ErrorCode = 6;
pub const REQUEST_TIMED_OUT: ErrorCode = 7;
pub const MESSAGE_TOO_LARGE: ErrorCode = 10;
pub const OFFSET_METADATA_TOO_LARGE: ErrorCode = 12;
pub const COORDINATOR_NOT_AVAILABLE: ErrorCode = 15;
pub const NOT_COORDINATOR: ErrorCode = 16;
pub const INVALID_TOPIC_EXCEPTION: ErrorCode = 17;
pub const NOT_ENOUGH_REPLICAS: ErrorCode = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode = 20;
pub const INVALID_REQUIRED_ACKS: ErrorCode = 21;
pub const ILLEGAL_GENERATION: ErrorCode = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: ErrorCode = 23;
pub const INVALID_GROUP_ID: ErrorCode = 24;
pub const UNKNOWN_MEMBER_ID: ErrorCode = 25;
pub const INVALID_SESSION_TIMEOUT: ErrorCode = 26;
pub const REBALANCE_IN_PROGRESS: ErrorCode = 27;
pub const UNSUPPORTED_VERSION: ErrorCode = 35;
pub const TOPIC_ALREADY_EXISTS: ErrorCode = 36;
pub const INVALID_PARTITIONS: ErrorCode = 37;
pub const INVALID_REPLICATION_FACTOR: ErrorCode = 38;
pub const INVALID_REPLICA_ASSIGNMENT: ErrorCode = 39;
pub const INVALID_CONFIG: ErrorCode = 40;
pub const NOT_CONTROLLER: ErrorCode = 41;
pub const INVALID_REQUEST: ErrorCode = 42;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: ErrorCode = 45;
pub const INVALID_PRODUCER_EPOCH: ErrorCode = 47;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: ErrorCode = 53;
pub const KAFKA_STORAGE_ERROR: ErrorCode = 56;
pub const GROUP_ID_NOT_FOUND: ErrorCode = 69;
pub const FENCED_LEADER_EPOCH: ErrorCode = 74;
pub const UNKNOWN_LEADER_EPOCH: ErrorCode = 75;
pub const MEMBER_ID_REQUIRED: ErrorCode = 79;
pub const GROUP_MAX_SIZE_REACHED: ErrorCode = 81;
pub const FENCED_INSTANCE_ID: ErrorCode = 82;
pub const NO_REASSIGNMENT_IN_PROGRESS: ErrorCode = 85;
pub const INVALID_RECORD: ErrorCode = 87;
pub const UNKNOWN_TOPIC_ID: ErrorCode = 100;
pub const INELIGIBLE_REPLICA: ErrorCode = 107;
pub const FENCED_MEMBER_EPOCH: ErrorCode = 110;
pub const INVALID_RECORD_STATE: ErrorCode = 121;
pub const SHARE_SESSION_NOT_FOUND: ErrorCode = 122;
pub const INVALID_SHARE_SESSION_EPOCH: ErrorCode = 123;
pub const SHARE_SESSION_LIMIT_REACHED: ErrorCode = 133;

/// Every code above with its name, for messages and for the test below.
pub const ALL: &[(ErrorCode, &str)] = &[
    (UNKNOWN_SERVER_ERROR, "UNKNOWN_SERVER_ERROR"),
    (NONE, "NONE"),
    (OFFSET_OUT_OF_RANGE, "OFFSET_OUT_OF_RANGE"),
    (CORRUPT_MESSAGE, "CORRUPT_MESSAGE"),
    (UNKNOWN_TOPIC_OR_PARTITION, "UNKNOWN_TOPIC_OR_PARTITION"),
    (LEADER_NOT_AVAILABLE, "LEADER_NOT_AVAILABLE"),
    (NOT_LEADER_OR_FOLLOWER, "NOT_LEADER_OR_FOLLOWER"),
    (REQUEST_TIMED_OUT, "REQUEST_TIMED_OUT"),
    (MESSAGE_TOO_LARGE, "MESSAGE_TOO_LARGE"),
    (OFFSET_METADATA_TOO_LARGE, "OFFSET_METADATA_TOO_LARGE"),
    (COORDINATOR_NOT_AVAILABLE, "COORDINATOR_NOT_AVAILABLE"),
    (NOT_COORDINATOR, "NOT_COORDINATOR"),
    (INVALID_TOPIC_EXCEPTION, "INVALID_TOPIC_EXCEPTION"),
    (NOT_ENOUGH_REPLICAS, "NOT_ENOUGH_REPLICAS"),
    (
        NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    ),
    (INVALID_REQUIRED_ACKS, "INVALID_REQUIRED_ACKS"),
    (ILLEGAL_GENERATION, "ILLEGAL_GENERATION"),
    (INCONSISTENT_GROUP_PROTOCOL, "INCONSISTENT_GROUP_PROTOCOL"),
    (INVALID_GROUP_ID, "INVALID_GROUP_ID"),
    (UNKNOWN_MEMBER_ID, "UNKNOWN_MEMBER_ID"),
    (INVALID_SESSION_TIMEOUT, "INVALID_SESSION_TIMEOUT"),
    (REBALANCE_IN_PROGRESS, "REBALANCE_IN_PROGRESS"),
    (UNSUPPORTED_VERSION, "UNSUPPORTED_VERSION"),
    (TOPIC_ALREADY_EXISTS, "TOPIC_ALREADY_EXISTS"),
    (INVALID_PARTITIONS, "INVALID_PARTITIONS"),
    (INVALID_REPLICATION_FACTOR, "INVALID_REPLICATION_FACTOR"),
    (INVALID_REPLICA_ASSIGNMENT, "INVALID_REPLICA_ASSIGNMENT"),
    (INVALID_CONFIG, "INVALID_CONFIG"),
    (NOT_CONTROLLER, "NOT_CONTROLLER"),
    (INVALID_REQUEST, "INVALID_REQUEST"),
    (OUT_OF_ORDER_SEQUENCE_NUMBER, "OUT_OF_ORDER_SEQUENCE_NUMBER"),
    (INVALID_PRODUCER_EPOCH, "INVALID_PRODUCER_EPOCH"),
    (
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    ),
    (KAFKA_STORAGE_ERROR, "KAFKA_STORAGE_ERROR"),
    (GROUP_ID_NOT_FOUND, "GROUP_ID_NOT_FOUND"),
    (FENCED_LEADER_EPOCH, "FENCED_LEADER_EPOCH"),
    (UNKNOWN_LEADER_EPOCH, "UNKNOWN_LEADER_EPOCH"),
    (MEMBER_ID_REQUIRED, "MEMBER_ID_REQUIRED"),
    (GROUP_MAX_SIZE_REACHED, "GROUP_MAX_SIZE_REACHED"),
    (FENCED_INSTANCE_ID, "FENCED_INSTANCE_ID"),
    (NO_REASSIGNMENT_IN_PROGRESS, "NO_REASSIGNMENT_IN_PROGRESS"),
    (INVALID_RECORD, "INVALID_RECORD"),
    (UNKNOWN_TOPIC_ID, "UNKNOWN_TOPIC_ID"),
    (INELIGIBLE_REPLICA, "INELIGIBLE_REPLICA"),
    (FENCED_MEMBER_EPOCH, "FENCED_MEMBER_EPOCH"),
    (INVALID_RECORD_STATE, "INVALID_RECORD_STATE"),
    (SHARE_SESSION_NOT_FOUND, "SHARE_SESSION_NOT_FOUND"),
    (INVALID_SHARE_SESSION_EPOCH, "INVALID_SHARE_SESSION_EPOCH"),
    (SHARE_SESSION_LIMIT_REACHED, "SHARE_SESSION_LIMIT_REACHED"),
];

/// The name of a code, for logs; `None` for a code this table does not hold.
pub fn name(code: ErrorCode) -> Option<&'static str> {
    ALL.iter()
        .find(|(known, _)| *known == code)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::error::ResponseError;

    /// `ResponseError`'s debug name in SCREAMING_SNAKE_CASE, as Kafka spells the code.
    fn kafka_name(error: ResponseError) -> String {
        let camel = format!("{error:?}");
        let mut name = String::new();
        for (index, letter) in camel.chars().enumerate() {
            if letter.is_ascii_uppercase() && index > 0 {
                name.push('_');
            }
            name.push(letter.to_ascii_uppercase());
        }
        name
    }

    #[test]
    fn every_code_has_kafkas_number_and_name() {
        for &(code, name) in ALL {
            if code == NONE {
                assert!(ResponseError::try_from_code(code).is_none());
                continue;
            }
            let kafka = ResponseError::try_from_code(code)
                .unwrap_or_else(|| panic!("{name} = {code} is no Kafka error code"));
            assert_eq!(kafka_name(kafka), name, "code {code}");
        }
    }

    #[test]
    fn codes_are_listed_once() {
        for (index, (code, name)) in ALL.iter().enumerate() {
            assert!(
                ALL[index + 1..].iter().all(|(other, _)| other != code),
                "{name} listed twice"
            );
        }
    }
}
