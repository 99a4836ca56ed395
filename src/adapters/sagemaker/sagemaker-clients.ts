import { ListEndpointsCommand, SageMakerClient } from "@aws-sdk/client-sagemaker";
import { SageMakerRuntimeClient } from "@aws-sdk/client-sagemaker-runtime";

/**
 * SageMaker control plane and runtime clients. Endpoints come from the SDK's own resolution
 * (AWS_ENDPOINT_URL_SAGEMAKER* overrides included), so the emulator needs no branch here.
 */
export class SageMakerClients {
  readonly control: SageMakerClient;
  readonly runtime: SageMakerRuntimeClient;

  constructor(region: string) {
    this.control = new SageMakerClient({ region, maxAttempts: 3 });
    this.runtime = new SageMakerRuntimeClient({ region, maxAttempts: 3 });
  }

  async ping(signal?: AbortSignal): Promise<void> {
    await this.control.send(new ListEndpointsCommand({ MaxResults: 1 }), { abortSignal: signal });
  }

  destroy(): void {
    this.control.destroy();
    this.runtime.destroy();
  }
}
