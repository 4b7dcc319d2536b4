// Emits a report in the formats a command was asked for: the terminal table (or JSON with --json) on
// stdout, and any of Markdown / JUnit / HTML / CSV written to files.
import * as fs from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { badInput, fileError } from '../model/errors.ts';
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

/**
 * Refuses, before any work, a report file that cannot be written where it is asked for (no such directory, a
 * directory in its place): a run would otherwise compute everything and then end on it, incomplete. What only the
 * write itself can tell (a full disk) still fails at the write, one line naming the file.
 */
export function checkReportPaths(out: ReportOutputs): void {
  for (const file of [out.markdown, out.junit, out.html, out.csv]) {
    if (file === undefined) continue;
    const dir = dirname(resolve(file));
    let st: fs.Stats;
    try {
      st = fs.statSync(dir);
    } catch (e) {
      throw fileError(file, 'write the report', e);
    }
    if (!st.isDirectory()) throw badInput(`${file}: cannot write the report: ${dir} is not a directory`);
    if (fs.statSync(file, { throwIfNoEntry: false })?.isDirectory()) throw badInput(`${file}: cannot write the report: it is a directory`);
  }
}

/** A report file; a write that fails (disk full, no such directory) is one line naming the file. */
function writeReport(file: string, text: string): void {
  try {
    fs.writeFileSync(file, text);
  } catch (e) {
    throw fileError(file, 'write the report', e);
  }
}

/** The reports of a run directory: always report.md, junit.xml and report.html in it, then any asked-for copies. */
export function emitRunReports(dir: string, input: ReportInput, out: ReportOutputs): void {
  writeReport(join(dir, 'report.md'), renderMarkdown(input));
  writeReport(join(dir, 'junit.xml'), renderJunit(input));
  writeReport(join(dir, 'report.html'), renderHtml(input));
  emitReports(input, out);
}
