// The list of commands. Add a command by writing cli/commands/<name>.ts exporting `register`. Each is
// loaded when it is named on the command line, so a command imports only what it needs; the top-level
// help and an unknown name load them all (the bin serves the top-level help from the build, cli/build.mjs).
import type { Command } from 'commander';

type CommandModule = { register(program: Command): void };

export const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  compare: () => import('./compare.ts'),
  gate: () => import('./gate.ts'),
  baseline: () => import('./baseline.ts'),
  import: () => import('./import.ts'),
  tokenize: () => import('./tokenize.ts'),
  fixture: () => import('./fixture.ts'),
  inspect: () => import('./inspect.ts'),
  reference: () => import('./reference.ts'),
  stages: () => import('./stages.ts'),
  run: () => import('./run.ts'),
  kernels: () => import('./kernels.ts'),
  bisect: () => import('./bisect.ts'),
  engine: () => import('./engine.ts'),
  replay: () => import('./replay.ts'),
  calibrate: () => import('./calibrate.ts'),
};

/** The modules to register for these arguments: the command they name, or every command. */
export async function commandsFor(argv: string[]): Promise<CommandModule[]> {
  // the program takes no options of its own, so the first argument that is not one is the command
  const named = argv.slice(2).find((a) => !a.startsWith('-'));
  const load = named !== undefined && Object.hasOwn(COMMANDS, named) ? [COMMANDS[named]] : Object.values(COMMANDS);
  return Promise.all(load.map((l) => l()));
}
