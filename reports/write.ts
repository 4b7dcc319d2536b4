// Emits a report in the formats a command was asked for: the terminal table (or JSON with --json) on
// stdout, and any of Markdown / JUnit / HTML / CSV written to files.
import * as fs from 'node:fs';
import { join } from 'node:path';
import { fileError } from '../model/errors.ts';
import { renderCsv } from './csv.ts';
import { renderHtml } from './html.ts';
import { renderJson } from './json.ts';
import { renderJunit } from './junit.ts';
import { renderMarkdown } from './markdown.ts';
import { renderTerminal } from './terminal.ts';
import type { ReportInput } from './view.ts';

export interface ReportOutputs {
  json?: boolean;
  markdown?: string;
  junit?: string;
  html?: string;
  csv?: string;
  /** the terminal's stage table split by layer */
  byLayer?: boolean;
}

export function emitReports(input: ReportInput, out: ReportOutputs): void {
  process.stdout.write(out.json ? renderJson(input) : renderTerminal(input, { byLayer: out.byLayer }));
  if (out.markdown) writeReport(out.markdown, renderMarkdown(input));
  if (out.junit) writeReport(out.junit, renderJunit(input));
  if (out.html) writeReport(out.html, renderHtml(input));
  if (out.csv) writeReport(out.csv, renderCsv(input));
}

/** A report file; a write that fails (disk full, no such directory) is one line naming the file. */
function writeReport(file: string, text: string): void {
  try {
    fs.writeFileSync(file, text);
  } catch (e) {
    throw fileError(file, 'write the report', e);
  }
}

/** The reports of a run directory: always report.md, junit.xml and report.html in it, plus any asked-for copies. */
export function emitRunReports(dir: string, input: ReportInput, out: ReportOutputs): void {
  emitReports(input, {
    json: out.json,
    markdown: out.markdown ?? join(dir, 'report.md'),
    junit: out.junit ?? join(dir, 'junit.xml'),
    html: out.html ?? join(dir, 'report.html'),
    csv: out.csv,
    byLayer: out.byLayer,
  });
}
