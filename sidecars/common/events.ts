// Events on the objects a person looks at (kubectl describe pvc), so failures are visible.
import type { Logger } from 'pino';
import os from 'node:os';
import { k8s } from './kube.js';

export class Recorder {
  constructor(
    private readonly core: k8s.CoreV1Api,
    private readonly component: string,
    private readonly log: Logger,
  ) {}

  async event(obj: k8s.KubernetesObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const ns = obj.metadata?.namespace ?? 'default';
    const now = new Date();
    try {
      await this.core.createNamespacedEvent({
        namespace: ns,
        body: {
          metadata: { generateName: `${obj.metadata?.name ?? 'object'}.`, namespace: ns },
          involvedObject: { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata?.name, namespace: obj.metadata?.namespace, uid: obj.metadata?.uid },
          reason,
          message: message.slice(0, 1024),
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
