// Events on the objects a person looks at (kubectl describe pvc), so failures are visible.
import type { Logger } from 'pino';
import os from 'node:os';
import { k8s } from './kube.js';

/**
 * Every reason our sidecars put on an Event. A closed list so that docs/troubleshooting.md can
 * say what each one means and what to do (test/unit/docs-troubleshooting.test.ts holds the two
 * together); the names follow the kubernetes-csi sidecars' where they have one, so alerts and
 * runbooks written for those keep working.
 */
export const EVENT_REASONS = [
  'ProvisioningSucceeded',
  'ProvisioningFailed',
  'VolumeDeleteFailed',
  'NodeSelected',
  'NodeNotEligible',
  'VolumeResizeSuccessful',
  'VolumeResizeFailed',
  'VolumeModify',
  'VolumeModifySuccessful',
  'VolumeModifyFailed',
  'VolumeModifyCanceled',
  'SnapshotCreationFailed',
  'SnapshotContentCheckandUpdateFailed',
  'SnapshotDeleteError',
  'GroupSnapshotCreationFailed',
  'GroupSnapshotContentCheckandUpdateFailed',
  'GroupSnapshotDeleteError',
  'VolumeConditionAbnormal',
  'VolumeConditionNormal',
] as const;
export type EventReason = (typeof EVENT_REASONS)[number];

/** Event messages are cut to 1 KiB, what events.k8s.io allows for a note; the whole error is in the log. */
const EVENT_MESSAGE_MAX_CHARS = 1024;

export class Recorder {
  constructor(
    private readonly core: k8s.CoreV1Api,
    private readonly component: string,
    private readonly log: Logger,
  ) {}

  async event(obj: k8s.KubernetesObject, type: 'Normal' | 'Warning', reason: EventReason, message: string): Promise<void> {
    const ns = obj.metadata?.namespace ?? 'default';
    const now = new Date();
    try {
      await this.core.createNamespacedEvent({
        namespace: ns,
        body: {
          metadata: { generateName: `${obj.metadata?.name ?? 'object'}.`, namespace: ns },
          involvedObject: { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata?.name, namespace: obj.metadata?.namespace, uid: obj.metadata?.uid },
          reason,
          message: message.slice(0, EVENT_MESSAGE_MAX_CHARS),
          type,
          source: { component: this.component, host: os.hostname() },
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
    } catch (err) {
      this.log.warn({ reason, err: String(err) }, 'could not record event');
    }
  }
}
