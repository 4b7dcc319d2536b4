// DS4 chat rendering, identical to ds4's CLI for `-p TEXT` (ds4_cli.c build_prompt → ds4.c
// encode_chat_prompt, catalog §7):
//   [BOS] + BPE(system) + <｜User｜> + BPE(prompt) + <｜Assistant｜> + (<think> | </think>)
// No newlines or role text. System and prompt are tokenized separately, so no BPE piece ever spans the
// boundary between them and the special tokens.
import { SPECIALS, type Tokenizer } from './tokenizer.ts';

/** ds4's default -sys text; an empty string omits the system part. */
export const DEFAULT_SYSTEM = 'You are a helpful assistant';

export interface ChatOptions {
  /** system prompt; default DEFAULT_SYSTEM, "" omits it (ds4 -sys "") */
  system?: string;
  /** end with <think> (ds4 --think) instead of </think> (ds4 --nothink, our default) */
  think?: boolean;
  /** no template: the text is BPE-tokenized as is */
  raw?: boolean;
}

export interface RenderedChat {
  ids: number[];
  /** the rendered text the ids spell, with special tokens written out */
  text: string;
}

/**
 * Token ids of a prompt as ds4 would feed them. A prompt that already starts with the BOS text is taken
 * as pre-rendered chat (special texts → ids, the rest BPE), with or without `raw`, as ds4's CLI does
 * (is_rendered_chat_prompt). ds4's --think-max prefix is not modelled.
 */
export function renderChat(tok: Tokenizer, prompt: string, opts: ChatOptions = {}): RenderedChat {
  if (prompt.startsWith(SPECIALS.bos)) return { ids: tok.encodeWithSpecials(prompt), text: prompt };
  if (opts.raw) return { ids: tok.encode(prompt), text: prompt };
  const system = opts.system ?? DEFAULT_SYSTEM;
  const end = opts.think ? SPECIALS.thinkStart : SPECIALS.thinkEnd;
  const special = (text: string) => tok.special(text)!;
  const ids = [
    tok.bos,
    ...tok.encode(system),
    special(SPECIALS.user),
    ...tok.encode(prompt),
    special(SPECIALS.assistant),
    special(end),
  ];
  return { ids, text: `${SPECIALS.bos}${system}${SPECIALS.user}${prompt}${SPECIALS.assistant}${end}` };
}
