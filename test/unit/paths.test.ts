// resolveUnderRoots: the one gate every staging and target path passes before the node
// service creates, attaches or mounts anything (#11 item 11). Real directories and
// symlinks in a temporary directory; nothing is mounted.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { resolveUnderRoots, locateUnderRoots, isEmptyDir, DEFAULT_PATH_ROOTS } from '../../driver/host/paths.js';
import { CsiError } from '../../driver/errors.js';

let tmp: string;
let root: string;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-paths-'));
  root = path.join(tmp, 'kubelet');
  await fs.mkdir(path.join(root, 'pods', 'a'), { recursive: true });
  await fs.writeFile(path.join(root, 'pods', 'file'), '');
  await fs.mkdir(path.join(tmp, 'elsewhere'));
  await fs.symlink(path.join(tmp, 'elsewhere'), path.join(root, 'pods', 'link'));
  await fs.symlink('/etc', path.join(root, 'pods', 'etc'));
  await fs.symlink(root, path.join(tmp, 'kubelet-link'));
});

afterAll(async () => {
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

async function outcomeOf(p: Promise<unknown>): Promise<number | 'OK'> {
  return p.then(
    () => 'OK',
    (e) => {
      expect(e).toBeInstanceOf(CsiError);
      return (e as CsiError).code;
    },
  );
}

describe('resolveUnderRoots', () => {
  it('defaults to kubelet\'s directory', () => {
    expect(DEFAULT_PATH_ROOTS).toEqual(['/var/lib/kubelet']);
  });

  it.each(['/', '/etc', '/etc/passwd', '/proc/self', '/dev/null', '/var/lib/kubelet-evil/x', '/var/lib/kubelet', '/var/lib'])(
    'refuses %s with the default root as INVALID_ARGUMENT',
    async (p) => {
      expect(await outcomeOf(resolveUnderRoots(p, DEFAULT_PATH_ROOTS, 'target_path'))).toBe(status.INVALID_ARGUMENT);
    },
  );

  it('accepts a path below a root, existing or not, and reports what is there', async () => {
    const dir = await resolveUnderRoots(path.join(root, 'pods', 'a'), [root], 'target_path');
    expect(dir.real).toBe(path.join(root, 'pods', 'a'));
    expect(dir.stat?.isDirectory()).toBe(true);
    const absent = await resolveUnderRoots(path.join(root, 'pods', 'new', 'deeper'), [root], 'target_path');
    expect(absent).toEqual({ real: path.join(root, 'pods', 'new', 'deeper') });
    expect((await resolveUnderRoots(path.join(root, 'pods', 'file'), [root], 'target_path')).stat?.isFile()).toBe(true);
  });

  it('refuses the root itself: a volume is never mounted over kubelet\'s directory', async () => {
    expect(await outcomeOf(resolveUnderRoots(root, [root], 'target_path'))).toBe(status.INVALID_ARGUMENT);
    expect(await outcomeOf(resolveUnderRoots(root + '/', [root], 'target_path'))).toBe(status.INVALID_ARGUMENT);
  });

  it.each([
    ['a symlink as the last component', 'pods/link'],
    ['a symlink to /etc', 'pods/etc'],
    ['a path through a symlink', 'pods/link/x'],
    ['a path through a symlink to /etc', 'pods/etc/passwd'],
  ])('refuses %s as INVALID_ARGUMENT', async (_what, rel) => {
    expect(await outcomeOf(resolveUnderRoots(path.join(root, rel), [root], 'staging_target_path'))).toBe(status.INVALID_ARGUMENT);
  });

  it('refuses a path through a file as FAILED_PRECONDITION', async () => {
    expect(await outcomeOf(resolveUnderRoots(path.join(root, 'pods', 'file', 'x'), [root], 'target_path'))).toBe(status.FAILED_PRECONDITION);
  });

  it('takes a root that is itself a symlink (a moved /var/lib/kubelet) by either name', async () => {
    const link = path.join(tmp, 'kubelet-link');
    const viaLink = await resolveUnderRoots(path.join(link, 'pods', 'a'), [link], 'target_path');
    expect(viaLink.real).toBe(path.join(root, 'pods', 'a'));
    const viaReal = await resolveUnderRoots(path.join(root, 'pods', 'a'), [link], 'target_path');
    expect(viaReal.real).toBe(path.join(root, 'pods', 'a'));
  });

  it('normalises // and . before comparing with a root', async () => {
    expect((await resolveUnderRoots(`${root}//pods/./a`, [root], 'target_path')).real).toBe(path.join(root, 'pods', 'a'));
  });

  it('a root that does not exist yet is FAILED_PRECONDITION for paths below it', async () => {
    expect(await outcomeOf(resolveUnderRoots(path.join(tmp, 'missing', 'x'), [path.join(tmp, 'missing')], 'target_path'))).toBe(status.FAILED_PRECONDITION);
  });

  it('locateUnderRoots answers undefined outside every root', async () => {
    expect(await locateUnderRoots('/etc', [root], 'target_path')).toBeUndefined();
  });
});

describe('isEmptyDir', () => {
  it('tells an empty directory from one with entries', async () => {
    expect(await isEmptyDir(path.join(root, 'pods', 'a'))).toBe(true);
    expect(await isEmptyDir(path.join(root, 'pods'))).toBe(false);
  });
});
