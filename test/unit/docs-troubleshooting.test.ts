// docs/troubleshooting.md against the code: a page that names messages the driver no longer
// answers, or misses ones it does, sends a person with a stuck pod the wrong way.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { EVENT_REASONS } from '../../sidecars/common/events.js';
import { userMessages } from '../lib/user-messages.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const PAGE = fs.readFileSync(path.join(ROOT, 'docs/troubleshooting.md'), 'utf8');
const section = (title: string) => PAGE.split(/^## /m).find((s) => s.startsWith(title + '\n')) ?? '';

/** The messages of the page's "Driver errors" section: each list item that opens with a code span. */
const documented = [...section('Driver errors').matchAll(/^- `([^`]+)`/gm)].map((m) => m[1]);
/** The reasons of the page's Events table. */
const documentedReasons = [...section('Events').matchAll(/^\| `(\w+)` \|/gm)].map((m) => m[1]);

describe('docs/troubleshooting.md', () => {
  const { messages, unreadable } = userMessages(ROOT);

  test('every FAILED_PRECONDITION and RESOURCE_EXHAUSTED message of the driver is readable from its source', () => {
    // A message built at run time cannot be checked against the page: write it as literals.
    expect(unreadable).toEqual([]);
    expect(messages.length).toBeGreaterThan(40);
  });

  test('documents every such message the driver answers', () => {
    const missing = messages.filter((m) => !documented.includes(m.pattern)).map((m) => `${m.where}: ${m.pattern}`);
    expect(missing).toEqual([]);
  });

  test('documents no message the driver does not answer', () => {
    const known = new Set(messages.map((m) => m.pattern));
    expect(documented.filter((d) => !known.has(d))).toEqual([]);
    expect(new Set(documented).size).toBe(documented.length);
  });

  test("documents every Event reason of the sidecars, and only those", () => {
    expect([...documentedReasons].sort()).toEqual([...EVENT_REASONS].sort());
  });

  test('every listed Event reason is written somewhere by a sidecar', () => {
    const src = sourceText(path.join(ROOT, 'sidecars')).replace(/export const EVENT_REASONS = \[[^\]]*\]/, '');
    expect(EVENT_REASONS.filter((r) => !src.includes(`'${r}'`))).toEqual([]);
  });
});

function sourceText(dir: string): string {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .map((e) => (e.isDirectory() ? sourceText(path.join(dir, e.name)) : e.name.endsWith('.ts') ? fs.readFileSync(path.join(dir, e.name), 'utf8') : ''))
    .join('\n');
}
