// Cancellation: SIGINT / SIGTERM stop a run within a second, leaving nothing that looks finished.
// JavaScript cannot be interrupted in the middle of synchronous code, so a signal is only *seen* when
// the event loop runs: the compute loops call `await throwIfCancelled()` at their layer and token
// boundaries, which yields to the event loop (where a pending signal is delivered) and then throws
// `Cancelled` once one has arrived. Whoever holds something that must not outlive the run (a capture
// sink's temp file, a child engine, worker threads, a run directory's lock) registers a cleanup with
// `onCancel`: cleanups run synchronously the moment the signal is delivered.
import { Ds4DiffError, EXIT } from '../model/errors.ts';

type Signal = 'SIGINT' | 'SIGTERM';

const EXIT_OF: Record<Signal, number> = { SIGINT: EXIT.interrupted, SIGTERM: EXIT.terminated };

/** The run was stopped by a signal: exit 130 (SIGINT) or 143 (SIGTERM), as a shell reports it. */
export class Cancelled extends Ds4DiffError {
  constructor(readonly signal: Signal, notes: string[]) {
    super([`interrupted by ${signal}`, ...notes].join('; '), EXIT_OF[signal]);
  }
}

let requested: Signal | undefined;
const notes: string[] = [];
const cleanups = new Set<() => string | void>();
// a compute loop yields to the event loop at most this often (a yield costs microseconds; this only
// keeps a tight per-token loop from yielding thousands of times a second)
const YIELD_MS = 20;
let lastYield = 0;

/** The signal that asked the run to stop, if any. */
export function cancelRequested(): Signal | undefined {
  return requested;
}

/**
 * Run `fn` (synchronously) when a signal arrives — or at once if one already has. A string it returns
 * is added to the one-line message the command ends with. Returns the unregister function.
 */
export function onCancel(fn: () => string | void): () => void {
  if (requested) {
    runCleanup(fn);
    return () => {};
  }
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

function runCleanup(fn: () => string | void): void {
  try {
    const note = fn();
    if (note) notes.push(note);
  } catch {
    // a cleanup that fails must not keep the others from running
  }
}

/** Ask the run to stop (what the signal handlers do); idempotent. */
export function requestCancel(signal: Signal): void {
  if (requested) return;
  requested = signal;
  for (const fn of [...cleanups]) runCleanup(fn);
  cleanups.clear();
}

/** A cancellation point: lets a pending signal be delivered, then throws `Cancelled` if one was. */
export async function throwIfCancelled(): Promise<void> {
  if (!requested && Date.now() - lastYield >= YIELD_MS) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    lastYield = Date.now();
  }
  if (requested) throw new Cancelled(requested, notes);
}

/** The error to end with, once cancelled (for code that notices cancellation without a cancellation point). */
export function cancelledError(): Cancelled | undefined {
  return requested ? new Cancelled(requested, notes) : undefined;
}

// A command only awaiting (no cancellation point coming) still ends this long after the signal.
const GRACE_MS = 1000;

/**
 * The CLI's handlers: the first SIGINT/SIGTERM runs the cleanups and lets the command end at its next
 * cancellation point (exit 130/143 with one line); if it has not ended within a second, or on a
 * second signal, the process exits right away (the cleanups already ran).
 */
export function installSignalHandlers(): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (requested) process.exit(EXIT_OF[requested]);
      requestCancel(signal);
      setTimeout(() => {
        process.stderr.write(`ds4-diff: ${new Cancelled(signal, notes).message}\n`);
        process.exit(EXIT_OF[signal]);
      }, GRACE_MS).unref();
    });
  }
}
