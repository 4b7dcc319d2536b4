// The list of commands. Add a command by writing cli/commands/<name>.ts exporting `register`.
import type { Command } from 'commander';
import { register as compare } from './compare.ts';
import { register as gate } from './gate.ts';
import { register as baseline } from './baseline.ts';
import { register as importDumps } from './import.ts';
import { register as tokenize } from './tokenize.ts';
import { register as fixture } from './fixture.ts';
import { register as inspect } from './inspect.ts';
import { register as reference } from './reference.ts';
import { register as stages } from './stages.ts';
import { register as run } from './run.ts';
import { register as kernels } from './kernels.ts';
import { register as engine } from './engine.ts';
import { register as bisect } from './bisect.ts';
import { register as replay } from './replay.ts';
import { register as calibrate } from './calibrate.ts';

export const COMMANDS: Array<(program: Command) => void> = [compare, gate, baseline, importDumps, tokenize, fixture, inspect, reference, stages, run, kernels, bisect, engine, replay, calibrate];
