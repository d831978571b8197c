//! Protocol tests without a broker: fixtures captured from real brokers and kcat, decoded, checked,
//! re-encoded and compared byte for byte; every fixture also fed to the frame reader a byte at a time;
//! and property tests of our batch codec against kafka-protocol's.

mod batch_props;
mod fixtures;
