import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { redactSecrets } from '../../driver/log.js';

describe('redactSecrets', () => {
  it('replaces a top-level secrets map and leaves other fields alone', () => {
    const req = { volume_id: 'vol-loop-1', secrets: { password: 'hunter2' }, parameters: { type: 'fast' } };
    expect(redactSecrets(req)).toEqual({ volume_id: 'vol-loop-1', secrets: '[REDACTED]', parameters: { type: 'fast' } });
  });

  it('replaces secrets at any depth, inside nested objects and arrays', () => {
    const req = {
      name: 'g',
      outer: { inner: { secrets: { token: 's3cr3t' }, keep: 1 } },
      list: [{ secrets: { k: 'v' } }, [{ deeper: { secrets: { a: 'b' } } }], 'plain', 5, null],
    };
    const out = redactSecrets(req);
    expect(JSON.stringify(out)).not.toMatch(/s3cr3t|"k":"v"|"a":"b"/);
    expect(out).toEqual({
      name: 'g',
      outer: { inner: { secrets: '[REDACTED]', keep: 1 } },
      list: [{ secrets: '[REDACTED]' }, [{ deeper: { secrets: '[REDACTED]' } }], 'plain', 5, null],
    });
  });

  it('hides mount flags, which the spec says may carry sensitive information', () => {
    const req = { volume_capability: { mount: { fs_type: 'ext4', mount_flags: ['noatime', 'password=x'] } } };
    const out = JSON.stringify(redactSecrets(req));
    expect(out).not.toContain('password=x');
    expect(out).toContain('2 REDACTED');
    expect(out).toContain('ext4');
  });

  it('shows an empty secrets map as empty (nothing to hide)', () => {
    expect(redactSecrets({ secrets: {} })).toEqual({ secrets: {} });
  });

  it('does not mutate its input', () => {
    const req = { secrets: { password: 'p' }, nested: [{ secrets: { x: 'y' } }] };
    const before = structuredClone(req);
    redactSecrets(req);
    expect(req).toEqual(before);
  });

  it('passes primitives and null through', () => {
    expect(redactSecrets(null)).toBeNull();
    expect(redactSecrets(undefined)).toBeUndefined();
    expect(redactSecrets('secrets')).toBe('secrets');
    expect(redactSecrets(3)).toBe(3);
  });

  it('does not redact fields that merely contain the word', () => {
    expect(redactSecrets({ secrets_hint: 'visible', my_secrets: { a: 'b' } })).toEqual({ secrets_hint: 'visible', my_secrets: { a: 'b' } });
  });
});

describe('csi.proto: every csi_secret field is called "secrets"', () => {
  const protoPath = fileURLToPath(new URL('../../proto/csi.proto', import.meta.url));
  // Drop comments so commented-out or documented examples cannot count.
  const text = fs
    .readFileSync(protoPath, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/[^\n]*/g, '');

  // A field declaration with options, which may span lines: `<name> = <n> [ ... ];`
  const FIELD_WITH_OPTIONS = /(\w+)\s*=\s*\d+\s*\[([^\]]*)\]\s*;/g;
  const secretFields = [...text.matchAll(FIELD_WITH_OPTIONS)]
    .filter((m) => /\(\s*csi_secret\s*\)\s*=\s*true/.test(m[2]))
    .map((m) => m[1]);

  it('has csi_secret fields at all (the parse found them)', () => {
    expect(secretFields.length).toBeGreaterThan(0);
  });

  it('found every csi_secret annotation, including ones spanning lines', () => {
    const annotations = text.match(/\(\s*csi_secret\s*\)\s*=\s*true/g) ?? [];
    expect(secretFields.length).toBe(annotations.length);
  });

  it('names each of them "secrets"', () => {
    expect(secretFields.filter((n) => n !== 'secrets')).toEqual([]);
  });
});
