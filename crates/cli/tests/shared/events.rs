//! Waiting for an Event, for the tests on `tusk dev` that include it with `#[path]` beside
//! `tenant_isolation/support.rs`.

use std::time::Duration;

use crate::support::Kubectl;

/// Waits up to `limit` for an Event about `name` of `(type, reason)` whose note contains the
/// third element.
pub fn wait_event(
    kubectl: &Kubectl,
    name: &str,
    (type_, reason, line): (&str, &str, &str),
    limit: Duration,
) {
    kubectl.until(
        &format!("a {type_} {reason} Event on {name} saying {line}"),
        limit,
        || {
            let events = kubectl.events_about(name);
            events
                .iter()
                .any(|(seen_type, seen, note)| {
                    seen_type == type_ && seen == reason && note.contains(line)
                })
                .then_some(())
                .ok_or(format!("{events:?}"))
        },
    );
}
