//! The connections a store keeps between its statements.
//!
//! sqlx 0.8 tests every connection handed back to its pool with one more exchange with the
//! database (a `Sync` on PostgreSQL, `COM_PING` on MySQL, a message to the connection's
//! worker thread on SQLite), on a task it spawns for the purpose: a second round trip for
//! every statement, which the server pays for as much as the client. The store therefore
//! keeps a connection whose statement completed on a stack of its own and gives the newest
//! one to the next statement, without the test. The test is only needed when a statement
//! did not complete (an error, or its future dropped by a timeout): such a connection goes
//! back to the pool, whose test drains it or closes it, and is never kept.
//!
//! The pool still opens every connection (and pings one that sat idle in the pool, see
//! `network_pool_options`), and bounds them: the stack and the statements running hold at
//! most the share of `max_connections` that [`Share`] allows, counted by a semaphore, so a
//! statement never waits on the pool while the stack holds a connection, and statements run
//! on the pool by others always find the rest. A kept connection goes back to the pool
//! after [`IDLE_FOR`] unused (checked as statements finish, and by a task while the store is
//! quiet), so other users of a shared pool get it back, and after [`KEEP_FOR`] kept, so the
//! pool's test and `max_lifetime` still see every connection regularly.
//!
//! Where the store queues its writes (SQLite), the queue's holder writes on a connection of
//! its own, kept apart from the reads' stack: a SQLite connection that starts a transaction
//! after another connection wrote throws its page cache away, so a writer that only follows
//! its own writes finds the pages it needs in its cache, and the queue, which every write
//! waits in, moves faster (measured: BENCHMARKS.md, "SQL stores").

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long a kept connection may go unused before it returns to the pool.
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(1);

/// How long a connection is kept, from when the pool handed it out, before it returns to
/// the pool (and its test) once.
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(60);

/// Whose the pool is, which sets how many of its connections the store may hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Share {
    /// The store opened it: it holds all but one connection (statements run on
    /// [`SqlStore::pool`](crate::SqlStore::pool) always find that one).
    Own,
    /// Given to the store, and maybe used for other statements too: it holds at most three
    /// quarters of them.
    WithOthers,
}

impl Share {
    /// How many of `max` connections the store may hold (0: it keeps none, and every
    /// statement takes its connection from the pool and hands it back).
    fn limit(self, max: usize) -> usize {
        match self {
            Share::Own => max.saturating_sub(1),
            Share::WithOthers => max - max.div_ceil(4),
        }
    }
}

/// The pool and the connections kept out of it.
pub(crate) struct Conns<DB: Database> {
    pool: Pool<DB>,
    /// One permit per connection the store may hold (kept or in use); `None`: it keeps none.
    permits: Option<Semaphore>,
    /// Where the store queues its writes (SQLite): one of the permits, set aside for the
    /// queue's holder, which then never waits behind reads for a connection while the
    /// queue waits for it.
    writer: Option<Semaphore>,
    /// Newest last.
    kept: Mutex<Vec<Kept<DB>>>,
    /// The write queue holder's own connection (with `writer`), kept apart from the reads'
    /// stack; `None` while a write uses it, or before the first.
    written: Mutex<Option<Kept<DB>>>,
    /// Whether the task returning idle connections runs.
    reaping: AtomicBool,
}

struct Kept<DB: Database> {
    conn: PoolConnection<DB>,
    /// When the pool handed it out.
    taken: Instant,
    /// When its last statement completed.
    used: Instant,
}

impl<DB: Database> Kept<DB> {
    fn new(conn: PoolConnection<DB>) -> Self {
        let taken = Instant::now();
        Self {
            conn,
            taken,
            used: taken,
        }
    }

    fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.used) < IDLE_FOR
            && now.saturating_duration_since(self.taken) < KEEP_FOR
    }
}

impl<DB: Database> Conns<DB> {
    /// `queued_writes`: the store runs one write at a time, and one connection is set aside
    /// for it where the pool has room.
    pub(crate) fn new(pool: Pool<DB>, share: Share, queued_writes: bool) -> Arc<Self> {
        let limit = share.limit(pool.options().get_max_connections() as usize);
        let writer = queued_writes && limit >= 2;
        let readers = limit - usize::from(writer);
        Arc::new(Self {
            pool,
            permits: (readers > 0).then(|| Semaphore::new(readers)),
            writer: writer.then(|| Semaphore::new(1)),
            kept: Mutex::new(Vec::new()),
            written: Mutex::new(None),
            reaping: AtomicBool::new(false),
        })
    }

    pub(crate) fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// A connection for one or more statements: the newest kept one, else one from the
    /// pool. Waits at most the pool's acquire timeout for a permit, then as the pool does.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Conn<'_, DB>, sqlx::Error> {
        self.acquire_for(false).await
    }

    /// As [`Conns::acquire`], for the holder of the store's write queue (`writing`), which
    /// takes the permit and the connection set aside for it where there are (its first
    /// write, or the first after its connection went back to the pool, takes one as reads
    /// do, and keeps it).
    pub(crate) async fn acquire_for(
        self: &Arc<Self>,
        writing: bool,
    ) -> Result<Conn<'_, DB>, sqlx::Error> {
        let own = writing && self.writer.is_some();
        let permits = match &self.writer {
            Some(writer) if writing => Some(writer),
            _ => self.permits.as_ref(),
        };
        let Some(permits) = permits else {
            return Ok(Conn {
                conns: self,
                kept: Kept::new(self.pool.acquire().await?),
                permit: None,
                own: false,
            });
        };
        let permit = match permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let wait = self.pool.options().get_acquire_timeout();
                match tokio::time::timeout(wait, permits.acquire()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return Err(sqlx::Error::PoolClosed),
                    Err(_) => return Err(sqlx::Error::PoolTimedOut),
                }
            }
        };
        if self.pool.is_closed() {
            drop(self.take_all());
            return Err(sqlx::Error::PoolClosed);
        }
        let now = Instant::now();
        // The writer's own connection first, then the newest on the stack.
        let mut slot = if own { self.writers().take() } else { None };
        loop {
            let top = slot.take().or_else(|| self.lock().pop());
            match top {
                Some(kept) if kept.fresh(now) => {
                    return Ok(Conn {
                        conns: self,
                        kept,
                        permit: Some(permit),
                        own,
                    });
                }
                // Back to the pool, which tests it on the way.
                Some(stale) => drop(stale),
                None => break,
            }
        }
        Ok(Conn {
            conns: self,
            kept: Kept::new(self.pool.acquire().await?),
            permit: Some(permit),
            own,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept<DB>>> {
        // Nothing panics while holding the lock; a poisoned stack is still a valid stack.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writers(&self) -> std::sync::MutexGuard<'_, Option<Kept<DB>>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_all(&self) -> Vec<Kept<DB>> {
        let mut all = std::mem::take(&mut *self.lock());
        all.extend(self.writers().take());
        all
    }

    /// The kept connections idle too long or kept too long, taken off the stack and out of
    /// the writer's place (dropped by the caller, outside the locks, they go back to the
    /// pool).
    fn take_stale(&self, now: Instant) -> Vec<Kept<DB>> {
        let mut stale: Vec<_> = self.lock().extract_if(.., |k| !k.fresh(now)).collect();
        stale.extend(self.writers().take_if(|k| !k.fresh(now)));
        stale
    }

    /// Keeps `kept`, whose statement completed (in the writer's place if `own`), and hands
    /// back to the pool what has been idle too long.
    fn keep(self: &Arc<Self>, mut kept: Kept<DB>, own: bool) {
        let now = Instant::now();
        kept.used = now;
        if own {
            *self.writers() = Some(kept);
        } else {
            self.lock().push(kept);
        }
        drop(self.take_stale(now));
        if !self.reaping.load(Ordering::Relaxed) {
            self.start_reaping();
        }
    }

    /// Starts the task that hands idle kept connections back to the pool while no statement
    /// runs; it ends with the store.
    fn start_reaping(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let conns: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(IDLE_FOR).await;
                let Some(conns) = conns.upgrade() else { return };
                if conns.pool.is_closed() {
                    drop(conns.take_all());
                    continue;
                }
                drop(conns.take_stale(Instant::now()));
            }
        });
    }
}

impl<DB: Database> Drop for Conns<DB> {
    fn drop(&mut self) {
        let kept = self.take_all();
        if tokio::runtime::Handle::try_current().is_err() {
            // Without a runtime the pool cannot take them back (it spawns a task for
            // that): close them here instead.
            for kept in kept {
                drop(kept.conn.detach());
            }
        }
    }
}

/// A connection in use by the store. [`Conn::release`] after the statements completed keeps
/// it for the next; dropped without it, the connection goes back to the pool.
pub(crate) struct Conn<'a, DB: Database> {
    conns: &'a Arc<Conns<DB>>,
    kept: Kept<DB>,
    /// `None` where the store keeps no connection.
    permit: Option<SemaphorePermit<'a>>,
    /// The write queue holder's connection: kept in its own place, not on the stack.
    own: bool,
}

impl<DB: Database> Conn<'_, DB> {
    /// Every statement on this connection completed: keep it for the next one. The permit
    /// is returned after the connection is on the stack, so a statement waiting for one
    /// finds it there.
    pub(crate) fn release(self) {
        let Conn {
            conns,
            kept,
            permit,
            own,
        } = self;
        if permit.is_some() {
            conns.keep(kept, own);
        }
        drop(permit);
    }
}

impl<DB: Database> Deref for Conn<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.kept.conn
    }
}

impl<DB: Database> DerefMut for Conn<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.kept.conn
    }
}
