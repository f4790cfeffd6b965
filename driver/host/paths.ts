// Where the node service may mount: only below the configured roots (kubelet's directory),
// and only through real directories. mount(8) follows symlinks, so a symlink anywhere below
// a root could send a volume over /etc; a path is therefore walked component by component
// with lstat, and refused at the first symlink, before anything is created or attached.
import fs from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { invalidArgument, failedPrecondition } from '../errors.js';

export const DEFAULT_PATH_ROOTS = ['/var/lib/kubelet'];

export interface ResolvedPath {
  /** The same place with the root's own symlinks resolved and nothing below it followed. */
  real: string;
  /** lstat of the last component, undefined when it does not exist (yet) or is unreadable. */
  stat?: Stats;
  /**
   * The last component answers EIO: a filesystem mounted there has failed (a shut-down XFS
   * fails even lstat of its root). Releasing it (umount) must still work; mounting onto it cannot.
   */
  unreadable?: boolean;
}

async function lstatOrUndefined(p: string, last: boolean): Promise<Stats | 'unreadable' | undefined> {
  try {
    return await fs.lstat(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'EIO' && last) return 'unreadable';
    throw err;
  }
}

/**
 * Resolves a request's path (already absolute and free of '..', see checkPath) strictly
 * below one of `roots`. INVALID_ARGUMENT when it is outside every root or passes through a
 * symlink; FAILED_PRECONDITION when a component that must be a directory is not one.
 */
export async function resolveUnderRoots(p: string, roots: readonly string[], field: string): Promise<ResolvedPath> {
  const r = await locateUnderRoots(p, roots, field);
  if (r?.unreadable) throw failedPrecondition(`${field} ${p} cannot be read (EIO): the filesystem mounted there has failed; unpublish or unstage what is there first`);
  if (r) return r;
  throw invalidArgument(`${field} ${p} is outside the directories this driver mounts in (${roots.join(', ')}; see --allowed-path-root)`);
}

/** As resolveUnderRoots, but undefined for a path outside every root. */
export async function locateUnderRoots(p: string, roots: readonly string[], field: string): Promise<ResolvedPath | undefined> {
  const norm = path.normalize(p).replace(/\/+$/, '');
  for (const root of roots) {
    const r = path.normalize(root).replace(/\/+$/, '');
    // The root may be named by the path the CO uses or by its real path (a symlinked
    // /var/lib/kubelet): both name the same directory.
    const realRoot = await fs.realpath(r).catch(() => undefined);
    const base = [r, realRoot].find((b) => b !== undefined && b !== '' && norm.startsWith(b + '/'));
    if (base === undefined) continue;
    if (realRoot === undefined) throw failedPrecondition(`${field} ${norm} lies under ${r}, which does not exist on this node`);
    const rest = norm.slice(base.length + 1).split('/');
    let cur = realRoot;
    for (let i = 0; i < rest.length; i++) {
      cur = path.join(cur, rest[i]);
      const st = await lstatOrUndefined(cur, i === rest.length - 1);
      if (!st) return { real: path.join(cur, ...rest.slice(i + 1)) };
      if (st === 'unreadable') return { real: cur, unreadable: true };
      if (st.isSymbolicLink()) throw invalidArgument(`${field} ${norm} passes through the symlink ${cur}; symlinks below ${r} are not followed`);
      if (i === rest.length - 1) return { real: cur, stat: st };
      if (!st.isDirectory()) throw failedPrecondition(`${field} ${norm}: ${cur} is not a directory`);
    }
  }
  return undefined;
}

/** Whether a directory has no entries. */
export async function isEmptyDir(p: string): Promise<boolean> {
  const d = await fs.opendir(p);
  try {
    return (await d.read()) === null;
  } finally {
    await d.close().catch(() => undefined);
  }
}
