//! The plugin's own tokio runtime, and [`guard`]: the wrapper every plugin future crosses the
//! boundary in.
//!
//! A cdylib links its own copy of tokio, so the host's runtime is invisible inside it: a tokio
//! timer or socket created while the host polls a plugin future panics with "there is no
//! reactor running" (measured in the prototype with the `redis` crate's 500 ms response
//! timeout). Each plugin library therefore owns one multi-thread runtime, and [`Guarded`]
//! enters that runtime's context around every poll. Timers and IO register with the plugin's
//! drivers (which run on the plugin's threads) while the future itself is polled on the
//! host's task: no cross-thread hop per call (prototype: Redis through FFI at direct-Redis
//! speed, where spawn-per-call cost ~5 µs/op).
//!
//! [`Guarded`] also catches panics: a panic while polling (or dropping) the plugin's future
//! becomes `PluginError { code: PANIC }` instead of async-ffi's "FFI future panicked" in the
//! host, and the message is kept.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use abi_stable::std_types::RResult;
use async_ffi::BorrowingFfiFuture;
use tokio::runtime::{Handle, Runtime};

use crate::PluginError;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static THREADS: OnceLock<usize> = OnceLock::new();
static NAME: OnceLock<String> = OnceLock::new();

/// Worker threads of a plugin runtime unless its config says otherwise. One worker matched
/// direct Redis throughput in the prototype; a second only helps CPU-heavy plugins.
pub const DEFAULT_THREADS: usize = 1;

/// Sets the plugin's name (thread names, panic messages). Only the first call counts.
pub fn set_name(name: &str) {
    let _ = NAME.set(name.to_string());
}

/// Sets the runtime's worker count. Only the first call counts, and only if it happens before
/// the runtime is first used (the export macros call it from `create`).
pub fn set_threads(threads: usize) {
    let _ = THREADS.set(threads.clamp(1, 64));
}

/// The plugin library's runtime, created on first use and never shut down (libraries are never
/// unloaded, so it lives as long as the process).
pub fn handle() -> &'static Handle {
    RUNTIME
        .get_or_init(|| {
            let name = NAME.get().map(String::as_str).unwrap_or("plugin");
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(*THREADS.get_or_init(|| DEFAULT_THREADS))
                .thread_name(format!("{name}-rt"))
                .enable_all()
                .build()
                .expect("cannot start the plugin's tokio runtime (out of threads or memory?)")
        })
        .handle()
}

/// Wraps a plugin future for the trip across the boundary: runtime context on every poll,
/// panics caught, `Result` turned into `RResult`.
pub fn guard<'a, T, F>(fut: F) -> BorrowingFfiFuture<'a, RResult<T, PluginError>>
where
    F: Future<Output = Result<T, PluginError>> + Send + 'a,
    T: 'a,
{
    BorrowingFfiFuture::new(Guarded {
        handle: handle(),
        fut: Some(fut),
    })
}

/// Runs `f` (the synchronous part of an exported function) with panics turned into errors.
pub fn catch<T>(f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    let _enter = handle().enter();
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panic_error(p)))
}

/// A future polled inside the plugin runtime's context with panics caught. See the module docs.
pub struct Guarded<F> {
    handle: &'static Handle,
    fut: Option<F>,
}

impl<T, F> Future for Guarded<F>
where
    F: Future<Output = Result<T, PluginError>>,
{
    type Output = RResult<T, PluginError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is never moved out of `self`; it is only polled in place or dropped in
        // place (assigning `None` runs its destructor where it lies).
        let this = unsafe { self.get_unchecked_mut() };
        let Some(fut) = this.fut.as_mut() else {
            return Poll::Ready(RResult::RErr(PluginError::internal(
                "plugin future polled after it completed",
            )));
        };
        let _enter = this.handle.enter();
        // SAFETY: see above; `fut` stays where it is until dropped in place.
        let pinned = unsafe { Pin::new_unchecked(fut) };
        match catch_unwind(AssertUnwindSafe(|| pinned.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                drop_in_place_caught(&mut this.fut);
                Poll::Ready(out.into())
            }
            Err(payload) => {
                drop_in_place_caught(&mut this.fut);
                Poll::Ready(RResult::RErr(panic_error(payload)))
            }
        }
    }
}

impl<F> Drop for Guarded<F> {
    fn drop(&mut self) {
        // A dropped (cancelled) future may own timers or sockets of the plugin runtime: drop
        // it inside that runtime's context, and never let its destructor unwind into the host.
        let _enter = self.handle.enter();
        drop_in_place_caught(&mut self.fut);
    }
}

fn drop_in_place_caught<F>(slot: &mut Option<F>) {
    if slot.is_some() {
        let _ = catch_unwind(AssertUnwindSafe(|| *slot = None));
    }
}

/// Turns a caught panic payload into a `PANIC` error that keeps the panic's message.
pub fn panic_error(payload: Box<dyn Any + Send>) -> PluginError {
    let msg = if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    };
    let plugin = NAME.get().map(String::as_str).unwrap_or("plugin");
    PluginError::panic(format!("plugin {plugin} panicked: {msg}"))
}
