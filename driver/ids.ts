// Volume, snapshot and group IDs are derived from the CO's name, so a retry after a
// crash at any line finds the object the first attempt made. The backend is part of the
// ID so every later RPC reaches the right backend without a lookup table.
import { createHash } from 'node:crypto';
import { invalidArgument, aborted } from './errors.js';

/** What an ID names, and the first part of it: a volume, a snapshot or a group snapshot. */
export type IdPrefix = 'vol' | 'snap' | 'group';

const ID_RE = /^(vol|snap|group)-([a-z][a-z0-9]{0,15})-([0-9a-f]{32})$/;
// What may reach a filesystem path or a tool at all; anything else is hostile.
const SAFE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function deriveId(prefix: IdPrefix, backend: string, name: string): string {
  const h = createHash('sha256').update(`${prefix}\0${backend}\0${name}`).digest('hex').slice(0, 32);
  return `${prefix}-${backend}-${h}`;
}

export interface ParsedId {
  prefix: IdPrefix;
  backend: string;
  id: string;
}

/**
 * Checks an ID from a request. Empty -> INVALID_ARGUMENT ("<field> is required");
 * path-like or oversized -> INVALID_ARGUMENT; well-formed but not one of ours -> undefined
 * (the object does not exist: callers answer NOT_FOUND or, for deletes, OK).
 */
export function parseId(value: string, field: string, prefix: IdPrefix): ParsedId | undefined {
  if (!value) throw invalidArgument(`${field} is required`);
  if (!SAFE_ID_RE.test(value) || value.includes('..')) {
    throw invalidArgument(`${field} ${JSON.stringify(value.slice(0, 80))} is not a valid ID: letters, digits, '.', '_' and '-' only, at most 128 characters`);
  }
  const m = ID_RE.exec(value);
  if (!m || m[1] !== prefix) return undefined;
  return { prefix, backend: m[2], id: value };
}

/** Pagination tokens: opaque to the CO, they carry the last ID returned. */
export function encodeToken(lastId: string): string {
  return Buffer.from(JSON.stringify({ after: lastId })).toString('base64url');
}

export function decodeToken(token: string): string | undefined {
  if (!token) return undefined;
  try {
    const v = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { after?: unknown };
    if (typeof v.after === 'string' && v.after.length > 0) return v.after;
  } catch {
    // fall through
  }
  throw aborted(`starting_token ${JSON.stringify(token.slice(0, 64))} is not a token this plugin issued; restart the listing without it`);
}

/** One page of items sorted by id, after the token, at most maxEntries (0 = all). */
export function paginate<T>(items: T[], idOf: (t: T) => string, startingToken: string, maxEntries: number): { page: T[]; nextToken: string } {
  if (maxEntries < 0) throw invalidArgument('max_entries must not be negative');
  const after = decodeToken(startingToken);
  const sorted = [...items].sort((a, b) => (idOf(a) < idOf(b) ? -1 : idOf(a) > idOf(b) ? 1 : 0));
  const rest = after === undefined ? sorted : sorted.filter((x) => idOf(x) > after);
  if (maxEntries === 0 || rest.length <= maxEntries) return { page: rest, nextToken: '' };
  const page = rest.slice(0, maxEntries);
  return { page, nextToken: encodeToken(idOf(page[page.length - 1])) };
}
