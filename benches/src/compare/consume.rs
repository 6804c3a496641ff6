//! `compare consume`: placeholder until the consumer comparison lands.

use super::{Broker, ClientResult, ConsumeArgs};

/// Runs the consume comparison.
pub fn run(_args: &ConsumeArgs, _broker: &Broker) -> Result<Vec<ClientResult>, String> {
    Err("compare consume is not implemented in this build".to_owned())
}
