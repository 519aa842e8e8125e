//! Tenant isolation, end to end: every attack of docs/security.md's threat model run against
//! `tusk dev` with a tenant's token (never the administrator's), each asserting what a person
//! would look for: the refusal, or the Event and status that explain why nothing happened.

mod admission;
mod backups;
mod store_gateway;
mod support;
