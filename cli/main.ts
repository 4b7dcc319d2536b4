// The ds4-diff command line. Each command lives in cli/commands/<name>.ts and registers itself here.
// Every error a user can cause ends as one line on stderr and an exit code (model/errors.ts), never a stack.
import { Command, CommanderError } from 'commander';
import { Cancelled, installSignalHandlers } from '../diff/cancel.ts';
import { Ds4DiffError, EXIT, fileError } from '../model/errors.ts';
import { commandsFor } from './commands/index.ts';

export async function main(argv: string[]): Promise<void> {
  // output piped into `head` and closed early: stop quietly, as any Unix filter does
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? EXIT.ok);
      throw e;
    });
  }
  // SIGINT / SIGTERM: stop at the next cancellation point with exit 130 / 143 (diff/cancel.ts)
  installSignalHandlers();
  const program = new Command();
  program
    .name('ds4-diff')
    .description('Correctness-diff workbench for DeepSeek V4 Flash (DS4) backends: reference vs device, stage by stage.')
    // a wrong flag or argument is one line like every other bad input (commander's suggestion on it), not the usage
    .configureOutput({ outputError: (text, write) => write(`ds4-diff: ${text.trim().replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')} (see --help)\n`) })
    .exitOverride();
  for (const c of await commandsFor(argv)) c.register(program);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    process.exitCode = reportError(err);
    // a signal's exit is immediate: whatever else is pending (a killed engine's pipes, workers) is moot
    if (err instanceof Cancelled) process.exit(process.exitCode);
  }
}

function reportError(err: unknown): number {
  if (err instanceof CommanderError) {
    // --help and --version are "errors" to commander; they already printed what they had to.
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.ok;
    return EXIT.badInput;
  }
  if (err instanceof Ds4DiffError) {
    process.stderr.write(`ds4-diff: ${err.message}\n`);
    return err.exitCode;
  }
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string' && e.path) {
    // a file operation no reader wrapped: still one line naming the file (exit 3, or 125 for disk full & co.)
    const f = fileError(e.path, e.syscall ?? 'access', e) as Ds4DiffError;
    process.stderr.write(`ds4-diff: ${f.message}\n`);
    return f.exitCode;
  }
  process.stderr.write(`ds4-diff: internal error: ${e?.message ?? String(err)}\n`);
  if (process.env.DS4_DIFF_DEBUG) process.stderr.write(`${e?.stack ?? ''}\n`);
  return EXIT.cannotEvaluate;
}
