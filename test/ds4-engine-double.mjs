#!/usr/bin/env node
// Executable launcher of the ds4 engine test double (test/engine-double.ts), run through tsx like
// cli/ds4-diff.js: `node test/ds4-engine-double.mjs -m MODEL -p Hello` behaves like a ds4 build.
import { register } from 'tsx/esm/api';

register();
await import('./engine-double.ts');
