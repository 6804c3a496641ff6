//! Checks the error-code table against a dump of Kafka 4.1.1's `Errors` enum.

use flumen_protocol::error::{ERROR_TABLE, ErrorCode};

const JAVA_DUMP: &str = include_str!("fixtures/kafka-4.1.1-errors.tsv");

#[test]
fn error_table_matches_kafka_4_1_errors_enum() {
    let mut java_rows = 0;
    for line in JAVA_DUMP.lines().filter(|l| !l.is_empty()) {
        let mut cols = line.split('\t');
        let code: i16 = cols.next().unwrap().parse().unwrap();
        let name = cols.next().unwrap();
        let retriable: bool = cols.next().unwrap().parse().unwrap();
        let ours = ErrorCode::from_code(code);
        assert_eq!(ours.name(), name, "code {code}");
        assert_eq!(ours.is_retriable(), retriable, "{name}");
        java_rows += 1;
    }
    assert_eq!(java_rows, ERROR_TABLE.len(), "same number of codes");
}
