// The list of commands. Add a command by writing cli/commands/<name>.ts exporting `register`.
import type { Command } from 'commander';

export const COMMANDS: Array<(program: Command) => void> = [];
