// Worker entry for reference/rowpool.ts: TypeScript runs through tsx's loader, as in cli/ds4-diff.js.
import { register } from 'tsx/esm/api';

register();
await import('./rowpool-worker.ts');
