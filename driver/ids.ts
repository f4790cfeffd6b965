// Volume, snapshot and group IDs are derived from the CO's name, so a retry after a
// crash at any line finds the object the first attempt made. The backend is part of the
// ID so every later RPC reaches the right backend without a lookup table.
//
// An ID may also say where the object lives (RBD: cluster, pool, namespace), so the backend
// goes straight there instead of searching every place it may use. The location stands
// between the backend and the name hash as length-prefixed fields (two hex digits of length,
// then the field: "04test03rbd00" is test, rbd, ""), so fields may hold '-' and IDs still
// parse one way. The hash is the same with or without a location: IDs that differ only in
// their location name the same object. That keeps IDs made before locations existed (and
// the sidecars' own derivation, which cannot know a location) working: the backend finds
// their object by searching, as it always did.
import { createHash } from 'node:crypto';
import { invalidArgument, aborted } from './errors.js';

/** What an ID names, and the first part of it: a volume, a snapshot or a group snapshot. */
export type IdPrefix = 'vol' | 'snap' | 'group';

/** CSI's limit for every ID (volume_id, snapshot_id, group_snapshot_id). */
export const MAX_ID_LENGTH = 128;
const ID_RE = /^(vol|snap|group)-([a-z][a-z0-9]{0,15})-(?:([A-Za-z0-9._-]+)-)?([0-9a-f]{32})$/;
// What may reach a filesystem path or a tool at all; anything else is hostile.
const SAFE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const FIELD_RE = /^[A-Za-z0-9._-]{0,255}$/;

function encodeLocation(fields: readonly string[]): string {
  return fields
    .map((f) => {
      if (!FIELD_RE.test(f)) throw new Error(`a location field may hold letters, digits, '.', '_', '-' only, at most 255: ${JSON.stringify(f.slice(0, 80))}`);
      return f.length.toString(16).padStart(2, '0') + f;
    })
    .join('');
}

/** The fields of an encoded location, or undefined when the lengths do not add up. */
function decodeLocation(s: string): string[] | undefined {
  const out: string[] = [];
  for (let i = 0; i < s.length; ) {
    const len = /^[0-9a-f]{2}$/.test(s.slice(i, i + 2)) ? parseInt(s.slice(i, i + 2), 16) : NaN;
    if (Number.isNaN(len) || i + 2 + len > s.length) return undefined;
    out.push(s.slice(i + 2, i + 2 + len));
    i += 2 + len;
  }
  return out;
}

/**
 * The ID of the object the CO calls `name`, with its location when the backend gives one.
 * A location that would make the ID longer than CSI allows is left out: the ID still works,
 * through the backend's search (a warning at start-up names such places, see the backend).
 */
export function deriveId(prefix: IdPrefix, backend: string, name: string, location: readonly string[] = []): string {
  const h = createHash('sha256').update(`${prefix}\0${backend}\0${name}`).digest('hex').slice(0, 32);
  const located = `${prefix}-${backend}-${encodeLocation(location)}-${h}`;
  return location.length > 0 && located.length <= MAX_ID_LENGTH ? located : `${prefix}-${backend}-${h}`;
}

/** Whether a location fits in an ID of this prefix and backend (see deriveId). */
export function locationFits(prefix: IdPrefix, backend: string, location: readonly string[]): boolean {
  return deriveId(prefix, backend, '', location).length > `${prefix}-${backend}-`.length + 32;
}

export interface ParsedId {
  prefix: IdPrefix;
  backend: string;
  id: string;
  /** Where the object lives, in the backend's fields; undefined when the ID does not say. */
  location?: string[];
}

/** An ID already known to be safe, parsed; undefined when it is not one of ours. */
function parseSafe(value: string): ParsedId | undefined {
  const m = ID_RE.exec(value);
  if (!m) return undefined;
  const location = m[3] === undefined ? undefined : decodeLocation(m[3]);
  if (m[3] !== undefined && (!location || location.length === 0)) return undefined;
  return { prefix: m[1] as IdPrefix, backend: m[2], id: value, ...(location ? { location } : {}) };
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
  const p = parseSafe(value);
  return p?.prefix === prefix ? p : undefined;
}

/** The location an ID of ours carries, or undefined (none, or not one of our IDs). */
export function locationOf(id: string): string[] | undefined {
  return SAFE_ID_RE.test(id) ? parseSafe(id)?.location : undefined;
}

/**
 * The ID without its location: the one key of the object whatever location an ID names it
 * with (locks, "is this name taken anywhere"). Anything else is returned as it is.
 */
export function unlocated(id: string): string {
  const p = SAFE_ID_RE.test(id) ? parseSafe(id) : undefined;
  return p?.location ? `${p.prefix}-${p.backend}-${id.slice(id.lastIndexOf('-') + 1)}` : id;
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
