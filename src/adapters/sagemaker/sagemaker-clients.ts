import { ApplicationAutoScalingClient } from "@aws-sdk/client-application-auto-scaling";
import { CloudWatchClient } from "@aws-sdk/client-cloudwatch";
import { ListEndpointsCommand, SageMakerClient } from "@aws-sdk/client-sagemaker";
import { SageMakerRuntimeClient } from "@aws-sdk/client-sagemaker-runtime";
import { EndpointProvisioner } from "./endpoint-provisioner.js";

/**
 * SageMaker, SageMaker Runtime, Application Auto Scaling and CloudWatch clients. Endpoints come
 * from the SDK's own resolution (AWS_ENDPOINT_URL_* overrides included), so the emulator needs no
 * branch here.
 */
export class SageMakerClients {
  readonly control: SageMakerClient;
  readonly runtime: SageMakerRuntimeClient;
  readonly autoscaling: ApplicationAutoScalingClient;
  readonly cloudwatch: CloudWatchClient;
  readonly provisioner: EndpointProvisioner;

  constructor(region: string) {
    this.control = new SageMakerClient({ region, maxAttempts: 3 });
    this.runtime = new SageMakerRuntimeClient({ region, maxAttempts: 3 });
    this.autoscaling = new ApplicationAutoScalingClient({ region, maxAttempts: 3 });
    this.cloudwatch = new CloudWatchClient({ region, maxAttempts: 3 });
    this.provisioner = new EndpointProvisioner(this.control, this.autoscaling, this.cloudwatch);
  }

  async ping(signal?: AbortSignal): Promise<void> {
    await this.control.send(new ListEndpointsCommand({ MaxResults: 1 }), { abortSignal: signal });
  }

  destroy(): void {
    this.control.destroy();
    this.runtime.destroy();
    this.autoscaling.destroy();
    this.cloudwatch.destroy();
  }
}
