// The messages a user meets when a volume does not come up: every FAILED_PRECONDITION and
// RESOURCE_EXHAUSTED the driver answers (kubelet and the sidecars show them verbatim in Events).
// Read from the source, so docs/troubleshooting.md is checked against what the code says today.
import fs from 'node:fs';
import path from 'node:path';

export interface UserMessage {
  /** The message with every `${…}` replaced by `…`. */
  pattern: string;
  /** file:line of the call. */
  where: string;
}

// The refusals made where they happen, plus the host failures toCsiError maps to
// FAILED_PRECONDITION (a mount flag the kernel refused; a tool missing from the image, whose
// message is its class's `super(...)` in errors.ts).
const CALL =
  /\b(?:failedPrecondition|resourceExhausted)\(\s*|new BackendError\(\s*'(?:precondition|exhausted)',\s*|new MountFlagsRefusedError\([\w.]+,\s*/g;
const ERROR_CLASS_MESSAGE = /\bsuper\(\s*/g;

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** The literal at `i` as a pattern and the index after it, or undefined when `i` is not a string or template literal. */
function readLiteral(src: string, i: number): { pattern: string; end: number } | undefined {
  const q = src[i];
  if (q !== "'" && q !== '"' && q !== '`') return undefined;
  let out = '';
  for (let j = i + 1; j < src.length; j++) {
    const c = src[j];
    if (c === '\\') {
      out += src[j + 1];
      j++;
    } else if (c === q) {
      return { pattern: out, end: j + 1 };
    } else if (q === '`' && c === '$' && src[j + 1] === '{') {
      let depth = 1;
      j += 2;
      for (; depth > 0; j++) {
        if (src[j] === '{') depth++;
        else if (src[j] === '}') depth--;
      }
      j--;
      if (!out.endsWith('…')) out += '…';
    } else {
      out += c;
    }
  }
  return undefined;
}

/** Literals joined by `+`, as one pattern. */
function readConcat(src: string, i: number): { pattern: string; end: number } | undefined {
  let lit = readLiteral(src, i);
  if (!lit) return undefined;
  let { pattern, end } = lit;
  for (let m = /^\s*\+\s*/.exec(src.slice(end)); m; m = /^\s*\+\s*/.exec(src.slice(end))) {
    lit = readLiteral(src, end + m[0].length);
    if (!lit) return undefined;
    pattern = (pattern + lit.pattern).replace(/……/g, '…');
    end = lit.end;
  }
  return { pattern, end };
}

/** The message argument at `i`: literals, or `cond ? literals : literals` (two messages). */
function readMessages(src: string, i: number): { patterns: string[]; end: number } | undefined {
  const one = readConcat(src, i);
  if (one) return { patterns: [one.pattern], end: one.end };
  const cond = /^[\w.!()\s]+\?\s*/.exec(src.slice(i));
  if (!cond) return undefined;
  const yes = readConcat(src, i + cond[0].length);
  const colon = yes && /^\s*:\s*/.exec(src.slice(yes.end));
  const no = yes && colon && readConcat(src, yes.end + colon[0].length);
  return yes && no ? { patterns: [yes.pattern, no.pattern], end: no.end } : undefined;
}

/** Every user-facing refusal under `root`/driver; `unreadable` lists calls whose message is not made of literals. */
export function userMessages(root: string): { messages: UserMessage[]; unreadable: string[] } {
  const messages: UserMessage[] = [];
  const unreadable: string[] = [];
  for (const file of sourceFiles(path.join(root, 'driver'))) {
    const src = fs.readFileSync(file, 'utf8');
    const errorsModule = file.endsWith(path.join('driver', 'errors.ts'));
    // errors.ts: only the messages its classes compose (the others take the caller's).
    for (const m of src.matchAll(errorsModule ? ERROR_CLASS_MESSAGE : CALL)) {
      if (errorsModule && /^\s*message\s*\)/.test(src.slice(m.index + m[0].length))) continue;
      const where = `${path.relative(root, file)}:${src.slice(0, m.index).split('\n').length}`;
      const read = readMessages(src, m.index + m[0].length);
      if (!read || !/^\s*,?\s*\)/.test(src.slice(read.end))) unreadable.push(where);
      else for (const pattern of read.patterns) messages.push({ pattern, where });
    }
  }
  return { messages, unreadable };
}
