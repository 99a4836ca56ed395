import { Arg, Ctx, Field, ID, InputType, Int, Mutation, ObjectType, Query, Resolver, Root, Subscription } from "type-graphql";
import { withoutNulls } from "../src/graphql/absent-inputs.js";
import type { GraphQLContext } from "../src/graphql/context.js";
import type { StoredEvent } from "../src/domain/events.js";
import type { EndpointView } from "../src/services/endpoint-service.js";
import { JobEventType, toJobEventType } from "./job-event.resolver.js";

@ObjectType("Endpoint", { description: "A SageMaker inference endpoint deployed through Diffgate, or a self-hosted WebUI server registered with it" })
export class EndpointType {
  @Field(() => String, { description: "sagemaker, or webui for a self-hosted WebUI server" })
  provider!: string;

  @Field(() => String, { nullable: true, description: "WebUI servers: where /sdapi/v1 is served" })
  baseUrl!: string | null;

  @Field(() => Boolean, { description: "WebUI servers: whether credentials are stored (they are never returned)" })
  hasCredentials!: boolean;

  @Field(() => [String], { description: "WebUI servers: the checkpoints the server offered at its last health check" })
  serverModels!: string[];

  @Field(() => Date, { nullable: true, description: "WebUI servers: the last health check" })
  lastHealthAt!: Date | null;

  @Field(() => ID, { description: "Upstream's EndpointDeploymentJobId" })
  id!: string;

  @Field(() => String, { description: "SageMaker endpoint name (esd-<type>-<name>)" })
  name!: string;

  @Field(() => String, { description: "Async or Real-time" })
  endpointType!: string;

  @Field(() => String)
  instanceType!: string;

  @Field(() => Int)
  initialInstanceCount!: number;

  @Field(() => Int)
  currentInstanceCount!: number;

  @Field(() => String, { description: "Creating, InService, Updating, Deleting, Deleted or Failed" })
  status!: string;

  @Field(() => Boolean)
  autoscaling!: boolean;

  @Field(() => Int)
  minInstanceNumber!: number;

  @Field(() => Int)
  maxInstanceNumber!: number;

  @Field(() => [String], { description: "Roles whose members may use the endpoint" })
  ownerRoles!: string[];

  @Field(() => String, { nullable: true })
  creator!: string | null;

  @Field(() => String, { nullable: true, description: "Why SageMaker (or Diffgate) failed the deployment" })
  failureReason!: string | null;

  @Field(() => Date)
  createdAt!: Date;

  @Field(() => Date, { nullable: true })
  inServiceAt!: Date | null;

  @Field(() => Date, { nullable: true })
  deletedAt!: Date | null;
}

@InputType()
export class DeployEndpointInput {
  @Field(() => String, { nullable: true, description: "1-20 letters, digits, hyphens; default a short random id" })
  endpointName?: string;

  @Field(() => String, { nullable: true, description: "Async (default) or Real-time" })
  endpointType?: string;

  @Field(() => String, { description: "ml.g4dn.{x,2x,4x,8x,12x}large or ml.g5.{x,2x,4x,8x,12x,24x}large" })
  instanceType!: string;

  @Field(() => Int, { description: "1-6" })
  initialInstanceCount!: number;

  @Field(() => Boolean, { nullable: true, description: "Scale with the backlog, down to zero (async only; default true for async)" })
  autoscalingEnabled?: boolean;

  @Field(() => Int, { nullable: true })
  minInstanceNumber?: number;

  @Field(() => Int, { nullable: true })
  maxInstanceNumber?: number;

  @Field(() => [String], { nullable: true, description: "Roles that may use it; default the caller's roles" })
  assignToRoles?: string[];

  @Field(() => String, { nullable: true, description: "An ECR image URI with a tag" })
  customDockerImageUri?: string;
}

@InputType()
export class RegisterWebUiEndpointInput {
  @Field(() => String, { description: "1-20 letters, digits, hyphens; the endpoint is named webui-<name>" })
  name!: string;

  @Field(() => String, { description: "Where the server's /sdapi/v1 is, e.g. http://gpu-box:7860" })
  baseUrl!: string;

  @Field(() => String, { nullable: true, description: "The server's --api-auth user" })
  username?: string;

  @Field(() => String, { nullable: true, description: "The server's --api-auth password (stored sealed, never returned)" })
  password?: string;

  @Field(() => [String], { nullable: true, description: "Roles that may use it; default the caller's roles" })
  assignToRoles?: string[];
}

const toType = (view: EndpointView) => Object.assign(new EndpointType(), view);

@Resolver(() => EndpointType)
export class EndpointResolver {
  @Query(() => [EndpointType], { description: "Endpoints assigned to the caller's roles or created by them (all with sagemaker_endpoint:all)" })
  async endpoints(@Ctx() ctx: GraphQLContext, @Arg("status", () => String, { nullable: true }) status?: string): Promise<EndpointType[]> {
    return (await ctx.runtime.endpoints.list(await ctx.principal(), status === undefined || status === null ? {} : { status })).map(toType);
  }

  @Query(() => EndpointType)
  async endpoint(@Ctx() ctx: GraphQLContext, @Arg("name", () => String) name: string): Promise<EndpointType> {
    return toType(await ctx.runtime.endpoints.get(await ctx.principal(), name));
  }

  @Mutation(() => EndpointType, { description: "Starts deploying an endpoint; follow it with endpointEvents(name)" })
  async deployEndpoint(@Ctx() ctx: GraphQLContext, @Arg("input", () => DeployEndpointInput) input: DeployEndpointInput): Promise<EndpointType> {
    return toType(await ctx.runtime.endpoints.deploy(await ctx.principal(), withoutNulls({ ...input })));
  }

  @Mutation(() => EndpointType, { description: "Registers a self-hosted WebUI server as an endpoint; its health check decides InService or Failed" })
  async registerWebUiEndpoint(@Ctx() ctx: GraphQLContext, @Arg("input", () => RegisterWebUiEndpointInput) input: RegisterWebUiEndpointInput): Promise<EndpointType> {
    return toType(await ctx.runtime.endpoints.registerWebUi(await ctx.principal(), withoutNulls({ ...input })));
  }

  @Mutation(() => [EndpointType], { description: "Starts deleting endpoints (all or none)" })
  async deleteEndpoints(@Ctx() ctx: GraphQLContext, @Arg("names", () => [String]) names: string[]): Promise<EndpointType[]> {
    return (await ctx.runtime.endpoints.delete(await ctx.principal(), names)).map(toType);
  }

  @Subscription(() => JobEventType, {
    description: "Every status and instance-count change of an endpoint after `after`, then live ones",
    subscribe: async ({ args, context }: { args: { name: string; after?: number | null }; context: GraphQLContext }) =>
      context.runtime.endpoints.follow(await context.principal(), args.name, args.after ?? 0),
  })
  endpointEvents(@Root() event: StoredEvent, @Arg("name", () => String) _name: string, @Arg("after", () => Int, { nullable: true, defaultValue: 0 }) _after: number): JobEventType {
    return toJobEventType(event);
  }
}
