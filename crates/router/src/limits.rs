//! Limits against abuse: how fast one source may open connections, how many it may hold, and
//! how many one database may be sent. Each admitted connection holds a [`Permit`] that gives
//! its places back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// The limits, as configured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// New connections one source may open per second, on average.
    pub per_source_rate: f64,
    /// Connections one source may open at once beyond the average (the bucket's size).
    pub per_source_burst: f64,
    /// Connections one source may hold open at once.
    pub per_source_connections: usize,
    /// Routed connections one database may be sent at once.
    pub per_database_connections: usize,
}

/// Why a connection was over a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// The source opens connections too fast.
    SourceRate,
    /// The source holds too many connections.
    SourceConnections,
    /// The database has too many routed connections.
    DatabaseConnections,
}

/// One source's token bucket and open connections.
#[derive(Debug)]
struct Source {
    tokens: f64,
    refilled: Instant,
    open: usize,
}

#[derive(Debug, Default)]
struct Counts {
    sources: HashMap<IpAddr, Source>,
    databases: HashMap<(String, String), usize>,
}

/// The limits and what is counted against them, shared by every connection.
#[derive(Clone, Debug)]
pub struct Limiter {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

/// A connection's places under the limits, given back on drop.
#[derive(Debug)]
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    /// The source it counts against, until [`Limiter::release_source`].
    source: Option<IpAddr>,
    database: Option<(String, String)>,
}

impl Limiter {
    /// A limiter with nothing counted yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection from `source` at `now`, or says which limit it is over.
    pub fn admit_source(&self, source: IpAddr, now: Instant) -> Result<Permit, Exceeded> {
        let source = source.to_canonical();
        let mut counts = self.counts();
        let entry = counts.sources.entry(source).or_insert(Source {
            tokens: self.limits.per_source_burst,
            refilled: now,
            open: 0,
        });
        let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
        entry.tokens = (entry.tokens + elapsed * self.limits.per_source_rate)
            .min(self.limits.per_source_burst);
        entry.refilled = now;
        if entry.open >= self.limits.per_source_connections {
            return Err(Exceeded::SourceConnections);
        }
        if entry.tokens < 1.0 {
            return Err(Exceeded::SourceRate);
        }
        entry.tokens -= 1.0;
        entry.open += 1;
        Ok(Permit {
            counts: self.counts.clone(),
            source: Some(source),
            database: None,
        })
    }

    /// Counts `permit`'s connection against the database `namespace/cluster`, or says it is
    /// full.
    pub fn admit_database(
        &self,
        permit: &mut Permit,
        namespace: &str,
        cluster: &str,
    ) -> Result<(), Exceeded> {
        let key = (namespace.to_owned(), cluster.to_owned());
        let mut counts = self.counts();
        let open = counts.databases.entry(key.clone()).or_default();
        if *open >= self.limits.per_database_connections {
            return Err(Exceeded::DatabaseConnections);
        }
        *open += 1;
        permit.database = Some(key);
        Ok(())
    }

    /// Takes `permit`'s connection off its source's count and gives the source back the rate
    /// it spent on it: for a tunnel whose token the database's link published. Every
    /// connection of a customer's tunnel comes from the few addresses of its cluster, so the
    /// per-source limits, meant for unknown clients, would cap the customer's whole
    /// application; the database's own limit still counts the connection.
    pub fn release_source(&self, permit: &mut Permit) {
        let Some(source) = permit.source.take() else {
            return;
        };
        let limits = self.limits;
        let mut counts = self.counts();
        if let Some(entry) = counts.sources.get_mut(&source) {
            entry.open = entry.open.saturating_sub(1);
            entry.tokens = (entry.tokens + 1.0).min(limits.per_source_burst);
        }
    }

    /// Forgets sources with nothing open whose bucket is full again, so that the map does not
    /// grow with every address ever seen.
    pub fn forget_idle(&self, now: Instant) {
        let limits = self.limits;
        self.counts().sources.retain(|_, source| {
            let elapsed = now.saturating_duration_since(source.refilled).as_secs_f64();
            source.open > 0
                || source.tokens + elapsed * limits.per_source_rate < limits.per_source_burst
        });
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(source) = self.source
            && let Some(source) = counts.sources.get_mut(&source)
        {
            source.open = source.open.saturating_sub(1);
        }
        if let Some(key) = self.database.take()
            && let Some(open) = counts.databases.get_mut(&key)
        {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.databases.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter() -> Limiter {
        Limiter::new(Limits {
            per_source_rate: 2.0,
            per_source_burst: 3.0,
            per_source_connections: 4,
            per_database_connections: 2,
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 2));

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let limiter = limiter();
        let start = Instant::now();
        let _held: Vec<Permit> = (0..3)
            .map(|_| limiter.admit_source(A, start).unwrap())
            .collect();
        assert_eq!(
            limiter.admit_source(A, start).unwrap_err(),
            Exceeded::SourceRate
        );
        // Another source is not held back by the first.
        assert!(limiter.admit_source(B, start).is_ok());
        // Half a second later, one more token (rate 2/s).
        let later = start + Duration::from_millis(500);
        let _fourth = limiter.admit_source(A, later).unwrap();
        // Four open: the concurrency limit, whatever the tokens.
        let much_later = start + Duration::from_secs(60);
        assert_eq!(
            limiter.admit_source(A, much_later).unwrap_err(),
            Exceeded::SourceConnections
        );
    }

    #[test]
    fn closing_gives_places_back() {
        let limiter = limiter();
        let now = Instant::now();
        let mut first = limiter.admit_source(A, now).unwrap();
        let mut second = limiter.admit_source(B, now).unwrap();
        let mut third = limiter.admit_source(B, now).unwrap();
        limiter
            .admit_database(&mut first, "shop", "elephant")
            .unwrap();
        limiter
            .admit_database(&mut second, "shop", "elephant")
            .unwrap();
        assert_eq!(
            limiter
                .admit_database(&mut third, "shop", "elephant")
                .unwrap_err(),
            Exceeded::DatabaseConnections
        );
        limiter
            .admit_database(&mut third, "shop", "mammoth")
            .unwrap();
        drop(first);
        let mut fourth = limiter.admit_source(A, now).unwrap();
        limiter
            .admit_database(&mut fourth, "shop", "elephant")
            .unwrap();
        drop((second, third, fourth));
        limiter.forget_idle(now + Duration::from_secs(10));
        assert!(limiter.counts().sources.is_empty());
        assert!(limiter.counts().databases.is_empty());
    }

    #[test]
    fn a_tunnels_connections_leave_its_source_free_but_count_against_its_database() {
        let limiter = limiter();
        let now = Instant::now();
        // Ten tunnel connections from one address, at once: over the source's burst (3) and
        // concurrency (4), but each is released once its token was admitted.
        let mut tunnels = Vec::new();
        for _ in 0..10 {
            let mut permit = limiter.admit_source(A, now).unwrap();
            limiter.release_source(&mut permit);
            tunnels.push(permit);
        }
        // The database's own limit (2) still holds for them.
        limiter
            .admit_database(&mut tunnels[0], "shop", "elephant")
            .unwrap();
        limiter
            .admit_database(&mut tunnels[1], "shop", "elephant")
            .unwrap();
        assert_eq!(
            limiter
                .admit_database(&mut tunnels[2], "shop", "elephant")
                .unwrap_err(),
            Exceeded::DatabaseConnections
        );
        // A client of the same address that is not a tunnel still has its whole burst.
        let _clients: Vec<Permit> = (0..3)
            .map(|_| limiter.admit_source(A, now).unwrap())
            .collect();
        assert_eq!(
            limiter.admit_source(A, now).unwrap_err(),
            Exceeded::SourceRate
        );
        // Released permits give nothing back twice when they close.
        drop(tunnels);
        assert_eq!(limiter.counts().sources[&A].open, 3);
        assert!(limiter.counts().databases.is_empty());
    }
}
