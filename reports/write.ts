// Emits a report in the formats a command was asked for: the terminal table (or JSON with --json) on
// stdout, and any of Markdown / JUnit / HTML written to files.
import * as fs from 'node:fs';
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
}

export function emitReports(input: ReportInput, out: ReportOutputs): void {
  process.stdout.write(out.json ? renderJson(input) : renderTerminal(input));
  if (out.markdown) fs.writeFileSync(out.markdown, renderMarkdown(input));
  if (out.junit) fs.writeFileSync(out.junit, renderJunit(input));
  if (out.html) fs.writeFileSync(out.html, renderHtml(input));
}
