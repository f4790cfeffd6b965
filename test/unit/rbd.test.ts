// The RBD backend's checks that need no cluster: the config file, StorageClass parameters,
// credentials from CSI secrets, key files, and the krbd mapper's error.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { parseConfig, parseFeatures, checkKey } from '../../driver/backends/rbd/config.js';
import { CephCli, credentialsFrom, errnoOf, imageSpec } from '../../driver/backends/rbd/cli.js';
import { DeviceMapper } from '../../driver/backends/rbd/mapper.js';
import { RbdBackend, volumeImage, snapshotImage } from '../../driver/backends/rbd/index.js';
import { BackendError } from '../../driver/backends/backend.js';
import { CommandError } from '../../driver/host/exec.js';
import { CsiError } from '../../driver/errors.js';
import { recordToJson } from '../../driver/host/atomic.js';
import { status } from '@grpc/grpc-js';
import { QOS_OPTIONS, checkQosValue, qosCommands } from '../../driver/backends/rbd/qos.js';

const KEY = 'AQBqEIJpAAAAABAAzu1bM0Kp2SF1HOLo6N3pFw==';
const base = () => ({
  clusters: [{ clusterID: 'c1', monitors: ['127.0.0.1:6789', 'v2:10.0.0.2:3300', 'mon.example.com'], pools: ['rbd', 'rbd/tenant-a', 'fast'], user: 'csi', keyFile: '/etc/tscsi/csi.key' }],
});

function backend(cfg: Record<string, unknown> = base()) {
  return new RbdBackend({ config: parseConfig(cfg), stateDir: '/nonexistent', log: pino({ level: 'silent' }) });
}

describe('rbd config file', () => {
  it('takes a valid file with defaults', () => {
    const c = parseConfig(base());
    expect(c.mapper).toBe('krbd');
    expect(c.maxCloneDepth).toBe(4);
    expect(c.imageFeatures).toBe('layering,deep-flatten');
    expect(c.clusters[0].pools).toEqual([
      { pool: 'rbd', namespace: '' },
      { pool: 'rbd', namespace: 'tenant-a' },
      { pool: 'fast', namespace: '' },
    ]);
    expect(parseConfig(base(), { mapper: 'fuse' }).mapper).toBe('fuse');
  });

  it.each([
    [{ clusters: [] }, /at least one cluster/],
    [{ clusters: [{ ...base().clusters[0], monitors: ['127.0.0.1:6789 --id admin'] }] }, /not host\[:port\]/],
    [{ clusters: [{ ...base().clusters[0], pools: ['-p'] }] }, /pool/],
    [{ clusters: [{ ...base().clusters[0], pools: ['a/b/c'] }] }, /not "pool" or "pool\/namespace"/],
    [{ clusters: [{ ...base().clusters[0], keyFile: undefined }] }, /user and keyFile go together/],
    [{ clusters: [{ ...base().clusters[0], keyFile: 'relative' }] }, /absolute/],
    [{ clusters: [base().clusters[0], base().clusters[0]] }, /appears twice/],
    [{ ...base(), mapper: 'ggate' }, /mapper must be one of/],
    [{ ...base(), maxCloneDepth: 0 }, /maxCloneDepth/],
    [{ ...base(), nodes: ['ok', '-bad'] }, /nodes/],
    [{ ...base(), mapOptions: ['ms_mode=prefer-crc', 'x;y'] }, /mapOptions/],
  ])('refuses %j', (cfg, re) => {
    expect(() => parseConfig(cfg as Record<string, unknown>)).toThrow(re);
  });
});

describe('rbd StorageClass parameters', () => {
  it('takes pools, namespaces and features the config allows', () => {
    const b = backend();
    b.validateParameters({});
    b.validateParameters({ clusterID: 'c1', pool: 'rbd', radosNamespace: 'tenant-a', imageFeatures: 'layering,exclusive-lock,object-map,fast-diff' });
    b.validateParameters({ pool: 'fast' });
  });

  it.each([
    [{ pool: 'other' }, /not one the driver may use/],
    [{ pool: 'rbd', radosNamespace: 'tenant-b' }, /not one the driver may use/],
    [{ pool: '--conf=/etc/passwd' }, /pool/],
    [{ radosNamespace: 'a/b' }, /radosNamespace/],
    [{ clusterID: 'c2' }, /not in the driver's rbd config/],
    [{ imageFeatures: 'journaling' }, /not supported/],
    [{ imageFeatures: 'deep-flatten' }, /must include layering/],
    [{ imageFeatures: 'layering,object-map' }, /needs exclusive-lock/],
    [{ imageFeatures: 'layering,exclusive-lock,fast-diff' }, /needs object-map/],
    [{ userKey: KEY }, /has no parameter "userKey"/],
  ])('refuses %j', (p, re) => {
    const err = (() => {
      try {
        backend().validateParameters(p as Record<string, string>);
      } catch (e) {
        return e as BackendError;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(BackendError);
    expect(err!.reason).toBe('invalid');
    expect(err!.message).toMatch(re);
  });

  it('needs clusterID when the config has several clusters', () => {
    const two = { clusters: [base().clusters[0], { ...base().clusters[0], clusterID: 'c2' }] };
    expect(() => backend(two).validateParameters({ pool: 'rbd' })).toThrow(/clusterID is required/);
    backend(two).validateParameters({ clusterID: 'c2', pool: 'rbd' });
  });

  it('parses feature lists', () => {
    expect(parseFeatures(' layering , deep-flatten,layering')).toEqual(['layering', 'deep-flatten']);
  });

  it('derives image names from CSI IDs', () => {
    expect(volumeImage('vol-rbd-0123456789abcdef0123456789abcdef')).toBe('csi-vol-0123456789abcdef0123456789abcdef');
    expect(snapshotImage('snap-rbd-0123456789abcdef0123456789abcdef')).toBe('csi-snap-0123456789abcdef0123456789abcdef');
    expect(imageSpec({ pool: 'rbd', namespace: 'ns' }, 'img', 's1')).toBe('rbd/ns/img@s1');
    expect(imageSpec({ pool: 'rbd', namespace: '' }, 'img')).toBe('rbd/img');
  });
});

describe('rbd credentials', () => {
  const cluster = parseConfig(base()).clusters[0];
  const noDefault = parseConfig({ clusters: [{ ...base().clusters[0], user: undefined, keyFile: undefined }] }).clusters[0];

  it('prefers the CSI secrets (ceph-csi names), else the config default', () => {
    expect(credentialsFrom(cluster, { userID: 'client.kube', userKey: KEY })).toEqual({ user: 'kube', key: KEY });
    expect(credentialsFrom(cluster, {})).toEqual({ user: 'csi', keyFile: '/etc/tscsi/csi.key' });
    expect(credentialsFrom(cluster)).toEqual({ user: 'csi', keyFile: '/etc/tscsi/csi.key' });
  });

  it('refuses half secrets, bad keys (without echoing them) and no credentials at all', () => {
    expect(() => credentialsFrom(cluster, { userID: 'kube' })).toThrow(/both userID and userKey/);
    const bad = 'not a key; rm -rf /';
    expect(() => checkKey(bad)).toThrow(/not valid base64/);
    try {
      checkKey(bad);
    } catch (e) {
      expect((e as Error).message).not.toContain(bad);
    }
    expect(() => credentialsFrom(cluster, { userID: '--id', userKey: KEY })).toThrow(/user ID is not valid/);
    expect(() => credentialsFrom(noDefault)).toThrow(/no cephx credentials for cluster c1/);
  });

  it('passes a secret key through a 0600 file in a 0700 directory, removed afterwards even on failure', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-rbd-unit-'));
    try {
      const cli = new CephCli(path.join(dir, 'keys'));
      await cli.init();
      expect((await fs.stat(path.join(dir, 'keys'))).mode & 0o777).toBe(0o700);
      let seen = '';
      await cli.withKeyFile({ user: 'kube', key: KEY }, async (f) => {
        seen = f;
        expect((await fs.stat(f)).mode & 0o777).toBe(0o600);
        expect((await fs.readFile(f, 'utf8')).trim()).toBe(KEY);
      });
      await expect(fs.stat(seen)).rejects.toThrow();
      await expect(cli.withKeyFile({ user: 'kube', key: KEY }, async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
      expect(await fs.readdir(path.join(dir, 'keys'))).toEqual([]);
      // A config key file is used in place, nothing is copied; one that is missing or empty is
      // refused before any tool runs (the tools would drop cephx and hang).
      const keyFile = path.join(dir, 'csi.key');
      await expect(cli.withKeyFile({ user: 'csi', keyFile }, async () => 'ran')).rejects.toThrow(/key file .* is not usable \(ENOENT\)/);
      await fs.writeFile(keyFile, '');
      await expect(cli.withKeyFile({ user: 'csi', keyFile }, async () => 'ran')).rejects.toThrow(/is not usable \(empty\)/);
      await fs.writeFile(keyFile, `${KEY}\n`);
      await cli.withKeyFile({ user: 'csi', keyFile }, async (f) => expect(f).toBe(keyFile));
      expect(cli.connArgs(cluster, 'kube', '/k')).toEqual(['-c', '/dev/null', '-m', '127.0.0.1:6789,v2:10.0.0.2:3300,mon.example.com', '--id', 'kube', '--keyfile', '/k']);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('reads errno from rbd stderr', () => {
    expect(errnoOf(new CommandError('rbd info', 2, 'rbd: error opening image x: (2) No such file or directory', false))).toBe(2);
    expect(errnoOf(new CommandError('rbd rm', 16, 'rbd: error: image still has watchers\n(16) Device or resource busy', false))).toBe(16);
    expect(errnoOf(new Error('x'))).toBeUndefined();
  });
});

describe('krbd mapper', () => {
  it('turns a kernel without rbd into an error a person can act on', async () => {
    const stderr = 'rbd: failed to load rbd kernel module (127)\nrbd: map failed: (2) No such file or directory';
    const fakeCli = { rbd: async () => Promise.reject(new CommandError('rbd device map', 2, stderr, false)) } as unknown as CephCli;
    class NoList extends DeviceMapper {
      override async mapped() {
        return undefined;
      }
    }
    const m = new NoList('krbd', fakeCli, []);
    const cluster = parseConfig(base()).clusters[0];
    const err = await m.map({ cluster, pool: { pool: 'rbd', namespace: '' }, image: 'csi-vol-x' }, { user: 'csi', keyFile: '/k' }).catch((e) => e);
    expect(err).toBeInstanceOf(BackendError);
    expect(err.reason).toBe('precondition');
    expect(err.message).toMatch(/krbd mapper could not map rbd\/csi-vol-x/);
    expect(err.message).toMatch(/--rbd-mapper/);
  });
});

describe('rbd: "could not look" is not "not there"', () => {
  type Tool = CephCli['tool'];
  const err = (stderr: string) => new CommandError('rbd ...', 1, stderr, false);
  /** A backend whose Ceph CLI answers from a table (the failures cannot be provoked on purpose from a live cluster). */
  function withCli(answer: (tool: string, args: string[]) => string) {
    const b = backend();
    const calls: string[] = [];
    b.cli.tool = (async (tool: string, _c: unknown, _cr: unknown, args: string[]) => {
      calls.push(`${tool} ${args.join(' ')}`);
      return { stdout: answer(tool, args), stderr: '', exitCode: 0 };
    }) as Tool;
    return { b, calls };
  }

  it('knowsNode: an unreadable node registry is UNAVAILABLE with the tool\'s message, not "unknown node"', async () => {
    const { b } = withCli((tool) => {
      if (tool === 'rados') throw err('error getting omap key set rbd/tscsi.nodes: (110) Connection timed out');
      return '';
    });
    const e = await b.knowsNode('node-7').then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(CsiError);
    expect((e as CsiError).code).toBe(status.UNAVAILABLE);
    expect((e as CsiError).message).toMatch(/node-7.*Connection timed out/);
  });

  it('knowsNode: a registry that does not exist yet means the node is not registered', async () => {
    const { b } = withCli((tool) => {
      if (tool === 'rados') throw err('error getting omap key set rbd/tscsi.nodes: (2) No such file or directory');
      return '';
    });
    expect(await b.knowsNode('node-7')).toBe(false);
    const { b: b2 } = withCli(() => 'node-6\nnode-7\n');
    expect(await b2.knowsNode('node-7')).toBe(true);
  });

  it('deleteVolume: an rbd rm that fails for another reason than "has snapshots" fails the call, and nothing goes to the trash', async () => {
    const { b, calls } = withCli((_tool, args) => {
      if (args[0] === 'info') return JSON.stringify({ name: 'x', size: 1 << 20, features: [] });
      if (args[0] === 'status') return JSON.stringify({ watchers: [] });
      if (args[0] === 'snap') return '[]';
      if (args[0] === 'rm') throw err('2026-12-01T00:00:00.000+0000 7f rbd: delete error: (13) Permission denied');
      if (args[0] === 'trash') return '[]';
      return '';
    });
    await expect(b.deleteVolume('vol-rbd-0123456789abcdef0123456789abcdef')).rejects.toThrow(/Permission denied/);
    expect(calls.filter((c) => c.startsWith('rbd trash mv'))).toEqual([]);
  });

  it('deleteVolume: an image whose trashed snapshots still have clones goes to the trash', async () => {
    const { b, calls } = withCli((_tool, args) => {
      if (args[0] === 'info') return JSON.stringify({ name: 'x', size: 1 << 20, features: [] });
      if (args[0] === 'status') return JSON.stringify({ watchers: [] });
      if (args[0] === 'snap') return '[]';
      // What rbd 16 prints for an image whose trashed snapshots have clones (exit 39 = ENOTEMPTY, no "(39) ..." text).
      if (args[0] === 'rm') throw new CommandError('rbd rm', 39, 'librbd::api::Image: remove: image has snapshots - not removing\nrbd: image has snapshots with linked clones - these must be deleted or flattened before the image can be removed.', false);
      if (args[0] === 'trash' && args[1] === 'ls') return '[]';
      return '';
    });
    await b.deleteVolume('vol-rbd-0123456789abcdef0123456789abcdef');
    expect(calls.filter((c) => c.startsWith('rbd trash mv'))).toHaveLength(1);
  });

  it('deleteVolume: an RBD trash that cannot be listed fails the call (UNAVAILABLE), an empty one does not', async () => {
    const answer = (trash: () => string) => (_tool: string, args: string[]) => {
      if (args[0] === 'info') return JSON.stringify({ name: 'x', size: 1 << 20, features: [] });
      if (args[0] === 'status') return JSON.stringify({ watchers: [] });
      if (args[0] === 'snap') return '[]';
      if (args[0] === 'trash' && args[1] === 'ls') return trash();
      return '';
    };
    const { b, calls } = withCli(answer(() => {
      throw err('2026-12-01T00:00:00.000+0000 7f rbd: trash list failed: (110) Connection timed out');
    }));
    const e = await b.deleteVolume('vol-rbd-0123456789abcdef0123456789abcdef').then(() => undefined, (x: unknown) => x);
    expect(calls.filter((c) => c.startsWith('rbd rm '))).toHaveLength(1); // the image itself is removed
    expect(e).toBeInstanceOf(CsiError);
    expect((e as CsiError).code).toBe(status.UNAVAILABLE);
    expect((e as CsiError).message).toMatch(/RBD trash of rbd .*Connection timed out/);
    for (const empty of ['', '[]']) {
      const { b: ok } = withCli(answer(() => empty));
      await ok.deleteVolume('vol-rbd-0123456789abcdef0123456789abcdef');
    }
  });

  it('listVolumes: an image whose record is not JSON, or no record, is logged and left out; the others are listed', async () => {
    const good = { id: 'vol-rbd-0123456789abcdef0123456789abcde1', name: 'ok', backend: 'rbd', capacityBytes: 1n << 20n, accessType: 'mount', fsType: 'ext4', parameters: {}, mutableParameters: {}, topology: {}, published: {}, createdAt: '' };
    const metaOf: Record<string, string> = {
      'csi-vol-0123456789abcdef0123456789abcde0': JSON.stringify({ 'tscsi.record': '{"record": {"id": "vol-rb' }),
      'csi-vol-0123456789abcdef0123456789abcde1': JSON.stringify({ 'tscsi.record': recordToJson({ record: good, depth: 0 }) }),
      'csi-vol-0123456789abcdef0123456789abcde2': JSON.stringify({ 'tscsi.record': 'null' }),
    };
    const { b } = withCli((_tool, args) => {
      if (args[0] === 'ls') return args[1] === 'rbd' ? JSON.stringify(Object.keys(metaOf)) : '[]'; // the config's other pools are empty
      if (args[0] === 'image-meta') return metaOf[args[2].split('/').pop()!];
      return '';
    });
    expect((await b.listVolumes()).map((v) => v.id)).toEqual([good.id]);
  });
});

describe('rbd-nbd in the node plugin', () => {
  it('is refused at start with a message that says why and what to use instead', () => {
    const mk = (node: boolean) => () => new RbdBackend({ config: parseConfig({ ...base(), mapper: 'rbd-nbd' }), stateDir: '/nonexistent', node, log: pino({ level: 'silent' }) });
    expect(mk(true)).toThrow(/rbd-nbd mapper is not supported.*die with it.*--rbd-mapper krbd.*--rbd-mapper fuse/);
    expect(mk(false)).not.toThrow(); // a controller never maps
  });
});

describe('rbd snapshot of a volume whose mapping cannot be read', () => {
  it('fails instead of cutting it without a freeze', async () => {
    const volId = 'vol-rbd-0123456789abcdef0123456789abcdef';
    const rec = { id: volId, name: 'pvc', backend: 'rbd', capacityBytes: 1n << 20n, accessType: 'mount', fsType: 'ext4', parameters: {}, mutableParameters: {}, topology: {}, published: {}, createdAt: '' };
    const mapper = {
      name: 'fake',
      mapped: async () => {
        throw new Error('cannot read the mapping record: EIO');
      },
    } as unknown as ConstructorParameters<typeof RbdBackend>[0]['mapper'];
    const b = new RbdBackend({ config: parseConfig(base()), stateDir: '/nonexistent', mapper, log: pino({ level: 'silent' }) });
    const calls: string[] = [];
    b.cli.tool = (async (_tool: string, _c: unknown, _cr: unknown, args: string[]) => {
      calls.push(args.join(' '));
      const spec = args.find((a) => a.includes('/csi-')) ?? '';
      if (args[0] === 'info') return { stdout: JSON.stringify({ name: 'x', size: 1 << 20, features: [] }), stderr: '', exitCode: 0 };
      if (args[0] === 'image-meta' && spec.includes('csi-vol-')) return { stdout: JSON.stringify({ 'tscsi.record': recordToJson({ record: rec, depth: 0 }) }), stderr: '', exitCode: 0 };
      throw new CommandError('rbd', 2, 'rbd: error opening image: (2) No such file or directory', false);
    }) as CephCli['tool'];
    const snap = { id: 'snap-rbd-0123456789abcdef0123456789abcdef', name: 's', sourceVolumeId: volId, sizeBytes: 1n << 20n, createdAtSeconds: 1n, createdAtNanos: 0, groupSnapshotId: '', parameters: {} };
    await expect(b.createSnapshots([snap])).rejects.toThrow(/EIO/);
    expect(calls.filter((c) => c.startsWith('snap create'))).toEqual([]);
  });
});

describe('rbd QoS limits as mutable parameters', () => {
  it('takes whole numbers per second (0: no limit) and refuses anything else', () => {
    for (const v of ['0', '1', '100', '9223372036854775807']) expect(checkQosValue(v)).toBeUndefined();
    for (const v of ['', '-1', '1.5', '01', '10k', ' 1', '9223372036854775808', '1e3']) expect(checkQosValue(v)).toMatch(/whole number/);
    expect(Object.keys(backend().mutableParameters).sort()).toEqual(Object.keys(QOS_OPTIONS).sort());
  });

  it('sets what differs and removes what is no longer asked (a clone inherits its parent limits)', () => {
    const spec = 'rbd/csi-vol-x';
    const meta = { 'tscsi.record': '{}', conf_rbd_qos_iops_limit: '100', conf_rbd_qos_bps_limit: '1048576' };
    expect(qosCommands(spec, meta, { qosIopsLimit: '100', qosWriteIopsLimit: '50' })).toEqual([
      ['config', 'image', 'set', spec, 'rbd_qos_write_iops_limit', '50'],
      ['config', 'image', 'remove', spec, 'rbd_qos_bps_limit'],
    ]);
    expect(qosCommands(spec, meta, { qosIopsLimit: '100', qosBpsLimit: '1048576' })).toEqual([]);
    expect(qosCommands(spec, {}, {})).toEqual([]);
  });
});
