import { describe, it, expect } from 'vitest';
import { status } from '@grpc/grpc-js';
import {
  checkName,
  parseBytes,
  parseRange,
  checkMountFlags,
  checkFsType,
  checkCapability,
  checkCapabilities,
  checkPath,
  checkStringMap,
  INT64_MAX,
  type Capability,
} from '../../driver/validate.js';
import { CsiError } from '../../driver/errors.js';
import { loadCsi } from '../../proto/load.js';

/** The CsiError a call throws (fails the test if it does not throw one). */
function errOf(fn: () => unknown): CsiError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CsiError);
    return e as CsiError;
  }
  throw new Error('expected the call to throw');
}

const mountCap = (over: Partial<NonNullable<Capability['mount']>> = {}, mode = 'SINGLE_NODE_WRITER'): Capability => ({
  mount: { fs_type: 'ext4', mount_flags: [], ...over },
  access_mode: { mode },
});
const blockCap = (mode = 'SINGLE_NODE_WRITER'): Capability => ({ block: {}, access_mode: { mode } });

describe('checkName', () => {
  it('accepts a 128-character name', () => {
    expect(() => checkName('n'.repeat(128))).not.toThrow();
  });

  it('rejects a 129-byte name with INVALID_ARGUMENT and says how long it is', () => {
    const e = errOf(() => checkName('n'.repeat(129)));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toContain('129 bytes');
    expect(e.message).toContain('128');
  });

  it('counts the spec limit in UTF-8 bytes, not characters', () => {
    expect(() => checkName('é'.repeat(64))).not.toThrow(); // 128 bytes
    const e = errOf(() => checkName('é'.repeat(65))); // 130 bytes, 65 characters
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toContain('130 bytes');
  });

  it('rejects an empty name naming the field', () => {
    const e = errOf(() => checkName('', 'snapshot name'));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toBe('snapshot name is required');
  });

  it.each([
    ['NUL', 'pvc\0x'],
    ['SOH', 'pvc\u0001x'],
    ['ESC', 'pvc\u001bx'],
    ['DEL', 'pvc\u007fx'],
    ['C1 control', 'pvc\u0085x'],
  ])('rejects a name containing %s', (_l, name) => {
    const e = errOf(() => checkName(name));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toMatch(/control character/);
  });

  it('accepts ordinary names, including non-ASCII letters', () => {
    for (const n of ['pvc-0b4f1c1e-1234', 'a', 'Volume.Name_1', 'données', 'emoji-\u{1F600}']) expect(() => checkName(n)).not.toThrow();
  });

  it('refuses a name whose bytes are not UTF-8, as the gRPC server decodes it (#11 item 14)', () => {
    // A CreateVolumeRequest as it arrives: proto-loader's deserializer turns the bytes
    // 0xff 0xfe into U+FFFD U+FFFD, the same string as the valid name "pvc-\uFFFD\uFFFD"
    // (and so the same derived volume ID) unless such names are refused.
    const { requestSerialize, requestDeserialize } = (loadCsi().csi.v1.Controller as any).service.CreateVolume;
    const wire: Buffer = requestSerialize({ name: 'pvc-ZZ' });
    const at = wire.indexOf('ZZ');
    wire[at] = 0xff;
    wire[at + 1] = 0xfe;
    const name: string = requestDeserialize(wire).name;
    expect(name).toBe(requestDeserialize(requestSerialize({ name: 'pvc-\uFFFD\uFFFD' })).name);
    for (const n of [name, 'pvc-\uFFFD', 'pvc-\uD800x', 'pvc-\uDC00']) {
      const e = errOf(() => checkName(n));
      expect(e.code).toBe(status.INVALID_ARGUMENT);
      expect(e.message).toMatch(/UTF-8/);
    }
  });
});

describe('parseBytes', () => {
  it('treats unset as 0', () => {
    expect(parseBytes(undefined, 'f')).toBe(0n);
    expect(parseBytes(null, 'f')).toBe(0n);
    expect(parseBytes('', 'f')).toBe(0n);
  });

  it('parses int64 strings exactly, up to INT64_MAX', () => {
    expect(parseBytes('1073741824', 'f')).toBe(1073741824n);
    expect(parseBytes('9223372036854775807', 'f')).toBe(INT64_MAX);
    expect(parseBytes(4096, 'f')).toBe(4096n);
  });

  it('rejects 2^63 with OUT_OF_RANGE', () => {
    const e = errOf(() => parseBytes('9223372036854775808', 'capacity_range.required_bytes'));
    expect(e.code).toBe(status.OUT_OF_RANGE);
    expect(e.message).toContain('capacity_range.required_bytes');
  });

  it('rejects a negative number with INVALID_ARGUMENT', () => {
    const e = errOf(() => parseBytes('-1', 'capacity_range.limit_bytes'));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toBe('capacity_range.limit_bytes must not be negative');
  });

  it.each(['1.5', '1e9', 'abc', ' 1', '1 ', '0x10', '1Gi', '+1', 1e21, 1.5])('rejects non-integer %s with INVALID_ARGUMENT', (v) => {
    const e = errOf(() => parseBytes(v, 'f'));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toMatch(/integer/);
  });
});

describe('parseRange', () => {
  it('unset range is {0, 0}', () => {
    expect(parseRange(undefined)).toEqual({ required: 0n, limit: 0n });
    expect(parseRange(null)).toEqual({ required: 0n, limit: 0n });
    expect(parseRange({})).toEqual({ required: 0n, limit: 0n });
  });

  it('parses required and limit', () => {
    expect(parseRange({ required_bytes: '100', limit_bytes: '200' })).toEqual({ required: 100n, limit: 200n });
    expect(parseRange({ required_bytes: '200', limit_bytes: '200' })).toEqual({ required: 200n, limit: 200n });
  });

  it('limit 0 means no limit, whatever the required size', () => {
    expect(parseRange({ required_bytes: '9223372036854775807', limit_bytes: '0' }).required).toBe(INT64_MAX);
  });

  it('rejects required > limit with INVALID_ARGUMENT', () => {
    const e = errOf(() => parseRange({ required_bytes: '201', limit_bytes: '200' }));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toContain('exceeds limit_bytes');
  });

  it('reports the offending field for out-of-range and negative values', () => {
    expect(errOf(() => parseRange({ limit_bytes: '9223372036854775808' })).code).toBe(status.OUT_OF_RANGE);
    const e = errOf(() => parseRange({ required_bytes: '-5' }));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toContain('capacity_range.required_bytes');
  });
});

describe('checkMountFlags never echoes a value', () => {
  it('names a refused key=value flag by position and key only', () => {
    const e = errOf(() => checkMountFlags(['noatime', 'password=hunter2']));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toContain('#2');
    expect(e.message).not.toContain('hunter2');
  });
});

describe('checkMountFlags', () => {
  it('accepts allowed flags and allowed key=value options', () => {
    expect(() =>
      checkMountFlags(['ro', 'noatime', 'nosuid', 'nodev', 'noexec', 'discard', 'commit=60', 'data=ordered', 'compress=zstd:3', 'logbsize=256k', 'space_cache=v2']),
    ).not.toThrow();
    expect(() => checkMountFlags([])).not.toThrow();
  });

  it.each(['exec', 'suid', 'dev', 'remount', 'ro,exec', 'a b', 'data=bogus', '', 'commit=abc', 'unknown=1', 'ro\0', 'ro\n', 'x'.repeat(65), 'context=system_u:object_r:foo'])(
    'rejects %j with INVALID_ARGUMENT',
    (flag) => {
      const e = errOf(() => checkMountFlags(['noatime', flag]));
      expect(e.code).toBe(status.INVALID_ARGUMENT);
      expect(e.message).toMatch(/^mount flag .* is not allowed/);
    },
  );

  it('lists the allowed flags when one is unknown', () => {
    expect(errOf(() => checkMountFlags(['exec'])).message).toMatch(/allowed: .*noexec/);
  });
});

describe('checkMountFlags per filesystem (#11 item 14)', () => {
  it.each([
    ['xfs', 'data=journal'],
    ['xfs', 'commit=30'],
    ['xfs', 'user_xattr'],
    ['xfs', 'compress=zstd'],
    ['xfs', 'nobarrier'],
    ['ext4', 'logbufs=8'],
    ['ext4', 'nouuid'],
    ['ext4', 'compress=zstd'],
    ['ext3', 'inode64'],
    ['btrfs', 'data=journal'],
    ['btrfs', 'logbsize=256k'],
  ])('refuses a flag %s does not take (%s) with INVALID_ARGUMENT naming the filesystem', (fs, flag) => {
    const e = errOf(() => checkMountFlags(['noatime', flag], fs));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toContain(`not allowed for ${fs}`);
    expect(() => checkMountFlags(['noatime', flag])).not.toThrow(); // fine while the filesystem is unknown
  });

  it.each([
    ['ext4', ['data=journal', 'commit=30', 'user_xattr', 'nobarrier', 'discard', 'noatime']],
    ['ext3', ['data=writeback', 'acl']],
    ['xfs', ['logbufs=8', 'logbsize=256k', 'allocsize=64m', 'nouuid', 'inode64', 'discard', 'nosuid']],
    ['btrfs', ['compress=zstd:3', 'compress-force=lzo', 'space_cache=v2', 'commit=60', 'nodiscard', 'ro']],
  ])('accepts what %s takes', (fs, flags) => {
    expect(() => checkMountFlags(flags, fs)).not.toThrow();
  });

  it('checkCapability checks the flags against the capability\'s filesystem', () => {
    expect(errOf(() => checkCapability(mountCap({ fs_type: 'xfs', mount_flags: ['data=journal'] }))).code).toBe(status.INVALID_ARGUMENT);
    expect(checkCapability(mountCap({ fs_type: 'ext4', mount_flags: ['data=journal'] })).mountFlags).toEqual(['data=journal']);
  });
});

describe('checkFsType', () => {
  it.each(['ext4', 'xfs', 'btrfs', ''])('accepts %j', (t) => {
    expect(() => checkFsType(t)).not.toThrow();
  });

  it.each(['ntfs', 'ext4;rm', 'EXT4', 'ext4 ', 'vfat', 'nfs'])('rejects %j with INVALID_ARGUMENT', (t) => {
    const e = errOf(() => checkFsType(t));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toMatch(/is not supported; use one of .*ext4.*xfs/);
  });
});

describe('checkCapability', () => {
  it('accepts a mount capability and returns its parts', () => {
    expect(checkCapability(mountCap({ fs_type: 'xfs', mount_flags: ['noatime'] }))).toEqual({
      accessType: 'mount',
      mode: 'SINGLE_NODE_WRITER',
      fsType: 'xfs',
      mountFlags: ['noatime'],
    });
  });

  it('accepts a block capability', () => {
    expect(checkCapability(blockCap('MULTI_NODE_MULTI_WRITER'))).toMatchObject({ accessType: 'block', mode: 'MULTI_NODE_MULTI_WRITER' });
  });

  it('rejects a missing capability', () => {
    const e = errOf(() => checkCapability(undefined));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toBe('volume_capability is required');
  });

  it('rejects a missing access type', () => {
    const e = errOf(() => checkCapability({ access_mode: { mode: 'SINGLE_NODE_WRITER' }, block: null, mount: null }));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toMatch(/access_type must be mount or block/);
  });

  it.each([undefined, 'UNKNOWN', 'SOMETHING_ELSE'])('rejects access mode %j', (mode) => {
    const cap: Capability = { block: {}, access_mode: mode === undefined ? null : { mode } };
    const e = errOf(() => checkCapability(cap));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toMatch(/access_mode .* is not supported/);
  });

  it('rejects volume_mount_group', () => {
    const e = errOf(() => checkCapability(mountCap({ volume_mount_group: '1000' })));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toMatch(/volume_mount_group is not supported/);
  });

  it('checks fs type and mount flags of a mount capability', () => {
    expect(errOf(() => checkCapability(mountCap({ fs_type: 'ntfs' }))).code).toBe(status.INVALID_ARGUMENT);
    expect(errOf(() => checkCapability(mountCap({ mount_flags: ['exec'] }))).code).toBe(status.INVALID_ARGUMENT);
  });
});

describe('checkCapabilities', () => {
  it('rejects a missing or empty list', () => {
    for (const v of [undefined, null, []]) {
      const e = errOf(() => checkCapabilities(v));
      expect(e.code).toBe(status.INVALID_ARGUMENT);
      expect(e.message).toBe('volume_capabilities is required');
    }
  });

  it('accepts several compatible capabilities', () => {
    expect(checkCapabilities([mountCap(), mountCap({ fs_type: '' }, 'SINGLE_NODE_READER_ONLY')])).toHaveLength(2);
  });

  it('rejects mixing block and mount', () => {
    const e = errOf(() => checkCapabilities([mountCap(), blockCap()]));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toMatch(/mix block and mount/);
  });

  it('rejects different filesystem types', () => {
    const e = errOf(() => checkCapabilities([mountCap({ fs_type: 'ext4' }), mountCap({ fs_type: 'xfs' })]));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toMatch(/different filesystem types/);
  });

  it('names the index of the bad capability', () => {
    const e = errOf(() => checkCapabilities([mountCap(), mountCap({ volume_mount_group: 'g' })]));
    expect(e.message).toContain('volume_capabilities[1]');
  });
});

describe('checkPath', () => {
  it('returns a valid absolute path unchanged', () => {
    expect(checkPath('/var/lib/kubelet/pods/x/volumes/y', 'target_path')).toBe('/var/lib/kubelet/pods/x/volumes/y');
    expect(checkPath('/a/..b/c..', 'target_path')).toBe('/a/..b/c..');
  });

  it.each([
    ['empty', '', 'target_path is required'],
    ['relative', 'var/lib/x', 'target_path must be an absolute path'],
    ['NUL', '/var/lib/\0x', 'target_path must be an absolute path'],
    ['too long', '/' + 'a'.repeat(4096), 'target_path must be an absolute path'],
    ['..', '/var/lib/../../etc', "target_path must not contain '..'"],
    ['trailing ..', '/var/..', "target_path must not contain '..'"],
    ['not UTF-8 (decoded as U+FFFD)', '/var/lib/kubelet/pods/\uFFFD', 'target_path is not valid UTF-8'],
    ['lone surrogate', '/var/lib/kubelet/\uD800', 'target_path is not valid UTF-8'],
  ])('rejects a %s path with INVALID_ARGUMENT', (_l, p, msg) => {
    const e = errOf(() => checkPath(p, 'target_path'));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toBe(msg);
  });
});

describe('checkStringMap', () => {
  it('returns {} for an unset map', () => {
    expect(checkStringMap(undefined, 'parameters')).toEqual({});
    expect(checkStringMap(null, 'parameters')).toEqual({});
  });

  it('returns a copy of a valid map', () => {
    const m = { type: 'fast', 'csi.storage.k8s.io/pvc/name': 'data-0' };
    const out = checkStringMap(m, 'parameters');
    expect(out).toEqual(m);
    expect(out).not.toBe(m);
  });

  it.each([
    ['empty key', { '': 'v' }, /parameters has an invalid key/],
    ['257-char key', { ['k'.repeat(257)]: 'v' }, /parameters has an invalid key/],
    ['control char in key', { 'a\u0001': 'v' }, /parameters has an invalid key/],
    ['4097-char value', { k: 'v'.repeat(4097) }, /parameters is larger than the CSI limit of 4096 bytes/],
    ['a map over 4 KiB in all', Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`key${i}`, 'v'.repeat(80)])), /larger than the CSI limit/],
    ['NUL in value', { k: 'a\0b' }, /parameters\["k"\] has an invalid value/],
  ])('rejects %s with INVALID_ARGUMENT', (_l, m, re) => {
    const e = errOf(() => checkStringMap(m as Record<string, string>, 'parameters'));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.message).toMatch(re);
  });

  it('accepts boundary sizes (256-char key, a map of exactly 4 KiB)', () => {
    expect(() => checkStringMap({ ['k'.repeat(256)]: 'v'.repeat(4096 - 256) }, 'parameters')).not.toThrow();
  });
});
