"""Real dependencies started on free ports for the tests and the benchmarks: Apache Kafka
clusters in KRaft mode from Maven Central's jars, throwaway PostgreSQL clusters."""
