#!/usr/bin/env node
// Entry shim: the CLI is written in TypeScript and run through tsx's loader, so there is no build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./main.ts');
await main(process.argv);
