// The sparse ds4-flash preset with layer 0 populated, generated once into the cache directory
// (populating a layer's 2.5 GB of routed experts takes a few minutes) and reused by every benchmark.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { cacheDir } from '../model/default-model.ts';
import { writeFixture } from '../model/fixture.ts';

export async function flashLayer0(): Promise<string> {
  const dir = cacheDir();
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'ds4-flash-populate0-seed0.gguf');
  if (!existsSync(path)) {
    process.stderr.write(`bench: writing the sparse ds4-flash preset with layer 0 populated to ${path} (a few minutes, once)\n`);
    await writeFixture({ preset: 'ds4-flash', seed: 0, populate: [0], out: path });
  }
  return path;
}
