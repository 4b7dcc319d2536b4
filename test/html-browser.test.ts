// The HTML report in a real browser (Debian's chromium through playwright-core): a run with a planted fault
// opens with the fault's heatmap cell in the failing colour, hover and click work, the plots are drawn, and the
// page logs no error. Screenshots are kept under test-artifacts/ (not committed). Skipped when no chromium is found.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RunManifest } from '../diff/manifest.ts';
import { FAIL_COLOUR } from '../reports/view.ts';

const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p): p is string => !!p && existsSync(p));
const CLI = join(import.meta.dirname, '..', 'cli', 'ds4-diff.js');
const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts');

/** '#d7191c' → 'rgb(215, 25, 28)', as getComputedStyle reports a fill. */
const rgb = (hex: string) => `rgb(${[1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(', ')})`;

describe.skipIf(!CHROMIUM)('HTML report in a browser', () => {
  it('shows a planted fault\'s cell in the failing colour, its rows on click, the plots, and logs no error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ds4-html-'));
    const r = spawnSync(process.execPath, [CLI, 'run', '--layer', '2', '-p', 'Hello', '--inject', 'rope_tail:pairs-halves', '--no-baseline', '--out', dir], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
    expect(r.status).toBe(1);
    const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as RunManifest;
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      const errors: string[] = [];
      page.on('console', (msg) => {
        if (msg.type() === 'error' || msg.type() === 'warning') errors.push(`${msg.type()}: ${msg.text()}`);
      });
      page.on('pageerror', (e) => errors.push(String(e)));
      page.on('request', (req) => {
        if (!req.url().startsWith('file:')) errors.push(`fetched ${req.url()}`);
      });
      await page.goto(`file://${join(dir, 'report.html')}`);
      const fill = (map: string, stage: string, layer: number) => page.$eval(`#${map} rect[data-stage="${stage}"][data-layer="${layer}"]`, (e) => getComputedStyle(e).fill);
      // the planted fault: rope_tail's stages fail by themselves in every layer; the stages before it do not
      for (const layer of [0, 1, 2]) expect(await fill('own-map', 'q_rope', layer)).toBe(rgb(FAIL_COLOUR));
      expect(await fill('own-map', 'attn_norm', 0)).not.toBe(rgb(FAIL_COLOUR));
      expect(await fill('own-map', 'q_norm', 0)).not.toBe(rgb(FAIL_COLOUR));
      expect(await page.$eval('#own-map rect[data-stage="q_rope"][data-layer="0"]', (e) => e.getAttribute('class'))).toContain('first-own');
      // hover: the numbers
      await page.hover('#own-map rect[data-stage="q_rope"][data-layer="0"]');
      const tip = await page.$eval('#tip', (e) => ({ text: e.textContent ?? '', shown: getComputedStyle(e).display }));
      expect(tip.shown).toBe('block');
      expect(tip.text).toMatch(/^q_rope layer 0 \(\d+ rows\)\nown error \/ own budget: [\d.e+]+x at pos \d+\nFAILS\nrelRms \S+ vs \S+ .*\nfirst stage wrong by itself$/);
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, 'report-heatmap-hover.png') });
      // click: the cell's rows, the failing one first
      await page.click('#own-map rect[data-stage="q_rope"][data-layer="0"]');
      expect(await page.$eval('#rows-title', (e) => e.textContent)).toBe('Rows of q_rope layer 0');
      const first = await page.$$eval('#rows-body tr:first-child td', (tds) => tds.map((t) => t.textContent));
      expect(first.slice(0, 3)).toEqual(['1', String(m.promptTokens[1]), 'fail']);
      // the growth plots are drawn, the case and the fallback statement are there
      expect(await page.$$eval('#layer-plot path', (p) => p.length)).toBeGreaterThan(0);
      expect(await page.$$eval('#pos-plot circle', (c) => c.length)).toBeGreaterThan(0);
      expect(await page.$eval('#fallback-statement', (e) => e.textContent)).toMatch(/^no host fallback: every primitive ran on the device/);
      expect(await page.$eval('#case', (e) => e.nextElementSibling?.textContent ?? '')).toContain(m.model.fingerprint);
      await page.screenshot({ path: join(ARTIFACTS, 'report-full.png'), fullPage: true });
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
