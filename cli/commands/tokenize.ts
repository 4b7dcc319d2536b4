// `ds4-diff tokenize -p TEXT`: the token ids ds4 would feed for a prompt (chat template and all), with
// each token's piece, to check against `./ds4 --dump-tokens -p TEXT` before diffing activations.
import type { Command } from 'commander';
import { openGguf } from '../../model/gguf.ts';
import { Tokenizer } from '../../model/tokenizer.ts';
import { DEFAULT_SYSTEM, renderChat } from '../../model/chat.ts';
import { badInput } from '../../model/errors.ts';

interface TokenizeOptions {
  model?: string;
  prompt?: string;
  system?: string;
  think?: boolean;
  nothink?: boolean;
  raw?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('tokenize')
    .description('show the token ids and pieces of a prompt rendered with the DS4 chat template (as ds4 -p TEXT)')
    .option('-m, --model <gguf>', 'GGUF whose tokenizer to use (default: the bundled tiny model)')
    .option('-p, --prompt <text>', 'prompt text')
    .option('--system <text>', 'system prompt ("" omits it)', DEFAULT_SYSTEM)
    .option('--think', 'end the template with <think> (ds4 --think)')
    .option('--nothink', 'end the template with </think> (ds4 --nothink; the default here)')
    .option('--raw', 'no template: tokenize the text as is')
    .option('--json', 'print {ids, pieces (decoded text), tokens (vocabulary form), text} as JSON')
    .addHelpText('after', [
      '',
      'The table has the layout of `./ds4 --dump-tokens` (ids, then each token as stored: "Ġare" is " are").',
      'A prompt that starts with <｜begin▁of▁sentence｜> is taken as pre-rendered chat, as ds4 does.',
      'Note: ds4\'s own CLI defaults to thinking; pass --think to match a plain `./ds4 -p TEXT`.',
      '',
      'Examples:',
      '  ds4-diff tokenize -p Hello',
      '  ds4-diff tokenize -m flash.gguf -p "def f(x):" --system "" --json',
    ].join('\n'))
    .action(async (opts: TokenizeOptions) => {
      if (opts.prompt === undefined) throw badInput('tokenize needs -p TEXT');
      if (opts.think && opts.nothink) throw badInput('tokenize: --think and --nothink exclude each other');
      // The fixture generator behind the default model is loaded only when no -m is given.
      const modelPath = opts.model ?? (await (await import('../../model/default-model.ts')).defaultModelPath());
      const m = await openGguf(modelPath);
      let tok: Tokenizer;
      try {
        tok = Tokenizer.fromGguf(m);
      } finally {
        m.close();
      }
      const { ids, text } = renderChat(tok, opts.prompt, { system: opts.system, think: opts.think === true, raw: opts.raw });
      if (opts.json) {
        const pieces = ids.map((id) => tok.piece(id));
        const tokens = ids.map((id) => tok.vocabText(id));
        process.stdout.write(JSON.stringify({ ids, pieces, tokens, text }) + '\n');
        return;
      }
      // Exactly ds4's --dump-tokens layout (ds4.c dump_tokens_fp), so the two outputs can be diffed.
      const lines = [`[${ids.join(', ')}]`, ...ids.map((id) => `${String(id).padStart(6)}  ${tok.vocabText(id)}`)];
      process.stdout.write(lines.join('\n') + '\n');
    });
}
