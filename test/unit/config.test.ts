// The driver's configuration (driver/config.ts): the defaults every flag had, which backends
// a mode builds, and bad values refused at once with a message naming the flag to fix.
import { describe, it, expect } from 'vitest';
import os from 'node:os';
import { resolveSettings, optionsFromArgv, optionsToArgv, ConfigError, USAGE, type DriverOptions } from '../../driver/config.js';

function problemsOf(opts: DriverOptions): string[] {
  try {
    resolveSettings(opts, { env: {} });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('the options were accepted');
}

describe('driver settings: defaults', () => {
  it('fills in each flag default main.ts had', () => {
    const s = resolveSettings({}, { env: {} });
    expect(s).toMatchObject({
      endpoint: 'unix:///run/tscsi/csi.sock',
      mode: 'all',
      driverName: 'csi.tscsi.dev',
      nodeId: os.hostname(),
      topologyKey: 'topology.tscsi.dev/node',
      nodeStateDir: '/var/lib/tscsi/node',
      maxVolumesPerNode: 256,
      allowedPathRoots: ['/var/lib/kubelet'],
      defaultBackend: 'loop',
      defaultFsType: 'ext4',
      defaultVolumeBytes: 1n << 30n,
      maxVolumeBytes: 16n << 40n,
      maxConcurrentRpcs: 64,
      maxChildProcesses: 16,
      logLevel: 'info',
      loop: { dataDir: '/var/lib/tscsi/loop', dataPoolBytes: undefined, capacityBytes: undefined },
    });
    expect(s.lvm).toBeUndefined();
    expect(s.rbd).toBeUndefined();
    expect(s.version).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('takes the log level from LOG_LEVEL unless the flag says otherwise', () => {
    expect(resolveSettings({}, { env: { LOG_LEVEL: 'debug' } }).logLevel).toBe('debug');
    expect(resolveSettings({ logLevel: 'warn' }, { env: { LOG_LEVEL: 'debug' } }).logLevel).toBe('warn');
  });

  it('reads text as flags give it and typed values alike', () => {
    const text = resolveSettings({ maxVolumesPerNode: '0', defaultVolumeSize: '512Mi', dataPoolSize: '20Gi', lvmVolumeGroups: 'vg1, vg2', lvmThinOverprovision: '1.5' }, { env: {} });
    const typed = resolveSettings({ maxVolumesPerNode: 0, defaultVolumeSize: 512n << 20n, dataPoolSize: 20n << 30n, lvmVolumeGroups: 'vg1,vg2', lvmThinOverprovision: 1.5 }, { env: {} });
    expect(text).toEqual(typed);
    expect(text.lvm).toEqual({ volumeGroups: ['vg1', 'vg2'], devices: undefined, mode: 'auto', thinOverprovisionRatio: 1.5 });
    expect(resolveSettings({ lvmVolumeGroups: 'tscsi-node-1', lvmSystemId: 'node-1' }, { env: {} }).lvm?.systemId).toBe('node-1');
  });
});

describe('driver settings: a backend only where it is used', () => {
  it("reads shared backends' pools for the metrics only where asked: by default wherever the controller service runs", () => {
    const rbd = { rbdConfig: '/etc/tscsi/rbd.json', defaultBackend: 'rbd' };
    expect(resolveSettings({ ...rbd, mode: 'controller' }, { env: {} }).metricsSharedBackends).toBe(true);
    expect(resolveSettings({ ...rbd, mode: 'all' }, { env: {} }).metricsSharedBackends).toBe(true);
    expect(resolveSettings({ ...rbd, mode: 'all', metricsSharedBackends: 'false' }, { env: {} }).metricsSharedBackends).toBe(false);
    expect(resolveSettings({ ...rbd, mode: 'node' }, { env: {} }).metricsSharedBackends).toBe(false);
        expect(resolveSettings({ ...rbd, mode: 'controller', metricsSharedBackends: false }, { env: {} }).metricsSharedBackends).toBe(false);
  });

  it('a controller-only driver has no loop backend unless a loop flag asks for one', () => {
    const rbdOnly = resolveSettings({ mode: 'controller', rbdConfig: '/etc/tscsi/rbd.json' }, { env: {} });
    expect(rbdOnly.loop).toBeUndefined();
    expect(rbdOnly.defaultBackend).toBe('rbd'); // the only one enabled
    expect(resolveSettings({ mode: 'controller', dataDir: '/srv/loop' }, { env: {} }).loop?.dataDir).toBe('/srv/loop');
    expect(resolveSettings({ mode: 'node' }, { env: {} }).loop?.dataDir).toBe('/var/lib/tscsi/loop');
  });

  it('needs a default backend to choose among several without loop', () => {
    expect(problemsOf({ mode: 'controller', rbdConfig: '/r.json', lvmVolumeGroups: 'vg' })).toEqual(['--default-backend is needed to choose among lvm, rbd']);
    expect(resolveSettings({ mode: 'controller', rbdConfig: '/r.json', lvmVolumeGroups: 'vg', defaultBackend: 'lvm' }, { env: {} }).defaultBackend).toBe('lvm');
    expect(problemsOf({ mode: 'controller' })).toEqual(['no backend is enabled: give --data-dir, --lvm-volume-groups or --rbd-config']);
  });

  it('keeps only the backends a test brings itself', () => {
    const s = resolveSettings({ defaultBackend: 'fake', rbdConfig: '/r.json' }, { env: {}, backendNames: ['fake'] });
    expect([s.loop, s.lvm, s.rbd]).toEqual([undefined, undefined, undefined]);
    expect(s.defaultBackend).toBe('fake');
  });
});

describe('driver settings: bad values are refused, each naming its flag', () => {
  it.each<[DriverOptions, string]>([
    [{ mode: 'both' }, '--mode must be one of all, controller, node; got "both"'],
    [{ defaultFsType: 'ntfs' }, '--default-fs-type must be ext4, xfs or btrfs; got "ntfs"'],
    [{ maxVolumesPerNode: '-1' }, '--max-volumes-per-node must be a whole number of at least 0; got "-1"'],
    [{ maxConcurrentRpcs: '1.5' }, '--max-concurrent-rpcs must be a whole number of at least 0; got "1.5"'],
    [{ maxChildProcesses: 0 }, '--max-child-processes must be a whole number of at least 1; got "0"'],
    [{ defaultVolumeSize: '1 GB' }, '--default-volume-size: not a size: "1 GB" (examples: 1073741824, 512Mi, 20Gi, 1.5Gi, 500M)'],
    [{ maxVolumeSize: '0' }, '--max-volume-size must be at least 1 bytes; got 0'],
    [{ dataDir: 'loop' }, '--data-dir must be an absolute path; got "loop"'],
    [{ stateDir: 'state' }, '--state-dir must be an absolute path; got "state"'],
    [{ allowedPathRoot: ['/'] }, '--allowed-path-root / must be an absolute directory other than /'],
    [{ allowedPathRoot: ['kubelet'] }, '--allowed-path-root kubelet must be an absolute directory other than /'],
    [{ lvmVolumeGroups: 'vg', lvmMode: 'fast' }, '--lvm-mode must be one of auto, dm, nodm; got "fast"'],
    [{ lvmVolumeGroups: 'vg', lvmThinOverprovision: '0' }, '--lvm-thin-overprovision must be a number above 0 (such as 10 or 1.5); got "0"'],
    [{ lvmVolumeGroups: ',' }, '--lvm-volume-groups must name at least one volume group'],
    [{ lvmDevices: '/dev/sdb' }, '--lvm-devices needs --lvm-volume-groups (the lvm backend is off without it)'],
    [{ lvmSystemId: 'node-1' }, '--lvm-system-id needs --lvm-volume-groups (the lvm backend is off without it)'],
    [{ lvmVolumeGroups: 'vg', lvmSystemId: 'node "1" } global { activation = 1' }, '--lvm-system-id must be 1-128 letters, digits and . + _ - (lvm\'s system ID characters), starting with a letter or digit; got "node \\"1\\" } global { activation = 1"'],
    [{ rbdMapper: 'fuse' }, '--rbd-mapper needs --rbd-config (the rbd backend is off without it)'],
    [{ rbdConfig: '/r.json', rbdMapper: 'iscsi' }, '--rbd-mapper must be one of krbd, rbd-nbd, fuse; got "iscsi"'],
    [{ defaultBackend: 'lvm' }, '--default-backend lvm is not enabled; enabled: loop'],
    [{ driverName: '' }, '--driver-name must not be empty'],
    [{ metricsAddress: 'localhost' }, '--metrics-address: not a host:port endpoint: "localhost"'],
    [{ metricsAddress: ':99999' }, '--metrics-address: bad port in ":99999"'],
    [{ metricsSharedBackends: 'yes' }, '--metrics-shared-backends must be one of true, false; got "yes"'],
  ])('%j', (opts, problem) => {
    expect(problemsOf(opts)).toEqual([problem]);
  });

  it('lists every problem at once', () => {
    const err = (() => {
      try {
        resolveSettings({ mode: 'x', maxVolumesPerNode: 'many' }, { env: {} });
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err?.message).toBe('2 problems:\n  --mode must be one of all, controller, node; got "x"\n  --max-volumes-per-node must be a whole number of at least 0; got "many"');
  });

  it('refuses an option it does not know (a typo in a test or a caller)', () => {
    expect(() => resolveSettings({ dataDirectory: '/x' } as DriverOptions, { env: {} })).toThrow('unknown option dataDirectory');
  });
});

describe('driver flags', () => {
  it('parses the flags deploy/ and csi-sanity/run pass, leaving the rest unset', () => {
    const argv = ['--mode=controller', '--endpoint=unix:///csi/csi.sock', '--rbd-config=/etc/tscsi/rbd.json', '--state-dir=/var/lib/tscsi/node', '--allowed-path-root', '/a', '--allowed-path-root', '/b'];
    expect(optionsFromArgv(argv)).toEqual({
      mode: 'controller',
      endpoint: 'unix:///csi/csi.sock',
      rbdConfig: '/etc/tscsi/rbd.json',
      stateDir: '/var/lib/tscsi/node',
      allowedPathRoot: ['/a', '/b'],
    });
    expect(optionsFromArgv(['--help'])).toBe('help');
  });

  it('refuses an unknown flag and points at --help', () => {
    expect(() => optionsFromArgv(['--data-directory', '/x'])).toThrow(/Unknown option '--data-directory'.*see --help/);
  });

  it('turns options back into the same command line (harness, demo, bench)', () => {
    const opts: DriverOptions = { nodeId: 'n1', dataPoolSize: 20n << 30n, maxVolumesPerNode: 0, allowedPathRoot: ['/a', '/b'], lvmVolumeGroups: 'vg' };
    const argv = optionsToArgv(opts);
    expect(argv).toEqual(['--node-id', 'n1', '--data-pool-size', String(20n << 30n), '--max-volumes-per-node', '0', '--allowed-path-root', '/a', '--allowed-path-root', '/b', '--lvm-volume-groups', 'vg']);
    expect(resolveSettings(optionsFromArgv(argv) as DriverOptions, { env: {} })).toEqual(resolveSettings(opts, { env: {} }));
  });

  it('documents every flag with its default in --help', () => {
    for (const line of ['--max-volumes-per-node N', '(default 256)', '--lvm-thin-overprovision N', '--rbd-mapper krbd|rbd-nbd|fuse', '(default unix:///run/tscsi/csi.sock)']) {
      expect(USAGE).toContain(line);
    }
  });
});
