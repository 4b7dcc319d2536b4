// Types of cli/sources.mjs (plain JavaScript: the entry imports it before anything is compiled).
export const HELP_FILE: string;
export function runtimeSources(): string[];
export function compiledIsCurrent(): boolean;
