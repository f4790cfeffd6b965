#!/usr/bin/env node
import { controllerMain } from '../common/run.js';
import { Provisioner } from './provisioner.js';

controllerMain('tscsi-provisioner', 60, (k, csi, opts) => new Provisioner(k, csi, opts));
