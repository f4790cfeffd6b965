import { describe, it, expect } from 'vitest';
import { status } from '@grpc/grpc-js';
import * as E from '../../driver/errors.js';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run, readOutput, hostFailure } from '../../driver/host/exec.js';

describe('errors', () => {
  it.each([
    ['invalidArgument', E.invalidArgument, status.INVALID_ARGUMENT],
    ['notFound', E.notFound, status.NOT_FOUND],
    ['alreadyExists', E.alreadyExists, status.ALREADY_EXISTS],
    ['failedPrecondition', E.failedPrecondition, status.FAILED_PRECONDITION],
    ['aborted', E.aborted, status.ABORTED],
    ['outOfRange', E.outOfRange, status.OUT_OF_RANGE],
    ['resourceExhausted', E.resourceExhausted, status.RESOURCE_EXHAUSTED],
    ['internal', E.internal, status.INTERNAL],
    ['unavailable', E.unavailable, status.UNAVAILABLE],
  ] as const)('%s carries its gRPC code and message', (_n, make, code) => {
    const e = make('volume vol-x: something');
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(E.CsiError);
    expect(e.code).toBe(code);
    expect(e.message).toBe('volume vol-x: something');
    expect(e.name).toBe('CsiError');
    expect(E.toCsiError(e)).toBe(e);
  });

  it('toCsiError knows nothing that is not a CsiError, BackendError or a stopped call (the server answers INTERNAL)', () => {
    expect(E.toCsiError(new Error('boom'))).toBeUndefined();
    expect(E.toCsiError('string')).toBeUndefined();
    expect(E.toCsiError(undefined)).toBeUndefined();
    expect(E.toCsiError({ code: status.NOT_FOUND })).toBeUndefined();
  });

  it('a host tool that is not installed is FAILED_PRECONDITION naming the tool and where it was looked for, not INTERNAL', async () => {
    const err = await run('tscsi-no-such-tool', ['--version'], { env: { PATH: '/nowhere/bin' } }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(E.ToolMissingError);
    const csi = E.toCsiError(err);
    expect(csi?.code).toBe(status.FAILED_PRECONDITION);
    expect(csi?.message).toBe(
      "the host tool tscsi-no-such-tool is not installed where the driver runs (not found on PATH /nowhere/bin): install it in the driver's container image, or run the driver where it is",
    );
    // A caller that wraps tool failures keeps the precondition rather than making it INTERNAL.
    expect(hostFailure('creating the volume', err).code).toBe(status.FAILED_PRECONDITION);
    expect(new E.ToolMissingError('lvm', '/usr/bin').message).toMatch(/host tool lvm .* \(package lvm2\)/);
  });

  // EACCES: the file is there but has no execute bit (as on a noexec mount, where the kernel
  // refuses exec with the same errno). Before, this was an INTERNAL "spawn ... EACCES".
  it('a host tool that cannot be run (EACCES) is FAILED_PRECONDITION saying what to fix, for run and readOutput', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-noexec-'));
    try {
      const tool = path.join(dir, 'tscsi-tool');
      await fs.writeFile(tool, '#!/bin/sh\necho hi\n', { mode: 0o644 });
      const viaPath = await run('tscsi-tool', [], { env: { PATH: dir } }).then(() => undefined, (e: unknown) => e);
      const byName = await run(tool, []).then(() => undefined, (e: unknown) => e);
      const streamed = await readOutput(tool, []).then((r) => r.next()).then(() => undefined, (e: unknown) => e);
      for (const [err, name] of [[viaPath, 'tscsi-tool'], [byName, tool], [streamed, tool]] as const) {
        expect(err).toBeInstanceOf(E.ToolNotExecutableError);
        const csi = hostFailure('creating the volume', err);
        expect(csi.code).toBe(status.FAILED_PRECONDITION);
        expect(csi.message).toBe(
          `the host tool ${name} is there but cannot be run (EACCES): it lacks the execute permission, or it lies on a filesystem mounted noexec; ` +
            "make it executable (chmod +x) or install it where the driver's container mounts allow running programs",
        );
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
