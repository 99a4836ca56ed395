import { GraphQLJSONObject } from "graphql-scalars";
import { Arg, Ctx, Field, FieldResolver, ID, InputType, Int, Mutation, ObjectType, Query, Resolver, Root, Subscription } from "type-graphql";
import { withoutNulls } from "../src/graphql/absent-inputs.js";
import { encodeKeysetCursor } from "../src/domain/keyset-cursor.js";
import type { GraphQLContext } from "../src/graphql/context.js";
import type { StoredEvent } from "../src/domain/events.js";
import type { InferenceView } from "../src/services/inference-service.js";
import { PageInfoType } from "./checkpoint.resolver.js";
import { JobEventType, toJobEventType } from "./job-event.resolver.js";

@ObjectType("Inference", { description: "An image generation job on an async SageMaker endpoint or a self-hosted WebUI server" })
export class InferenceType {
  @Field(() => ID)
  id!: string;

  @Field(() => String, { description: "txt2img, img2img, extra-single-image, extra-batch-images or rembg" })
  taskType!: string;

  @Field(() => String, { description: "CREATED, QUEUED, DISPATCHED, RUNNING, SUCCEEDED, FAILED or CANCELLED" })
  status!: string;

  @Field(() => String)
  endpointName!: string;

  @Field(() => String, { nullable: true })
  creator!: string | null;

  @Field(() => GraphQLJSONObject, { description: "The checkpoints used, per type (upstream's used_models)" })
  models!: Record<string, unknown>;

  @Field(() => String, { nullable: true, description: "Where SageMaker writes the output document" })
  outputLocation!: string | null;

  @Field(() => [String], { description: "Object keys of the result images" })
  imageKeys!: string[];

  @Field(() => String, { nullable: true, description: "The container's error text, or why the job failed" })
  failureReason!: string | null;

  @Field(() => Int, { description: "Last reported sampling step" })
  lastStep!: number;

  @Field(() => Int, { nullable: true })
  totalSteps!: number | null;

  @Field(() => Boolean)
  cancelRequested!: boolean;

  @Field(() => Int, { nullable: true, description: "While QUEUED: the place in the endpoint's line last announced (1 = next); null once dispatched" })
  queuePosition!: number | null;

  @Field(() => Date)
  createdAt!: Date;

  @Field(() => Date, { nullable: true })
  queuedAt!: Date | null;

  @Field(() => Date, { nullable: true })
  dispatchedAt!: Date | null;

  @Field(() => Date, { nullable: true })
  completedAt!: Date | null;

  /** Not a field: what the URL resolvers presign. */
  view!: InferenceView;
}

@ObjectType("MyInferenceEvent", { description: "An event of one of the caller's inference jobs, with its place in the caller's own stream" })
class MyInferenceEventType {
  @Field(() => Int, { description: "Position in the caller's inference event stream, from 1, without gaps; pass the last one seen as `after` to resume" })
  cursor!: number;

  @Field(() => ID)
  inferenceId!: string;

  @Field(() => Int, { description: "Position in the job's own stream (inferenceEvents)" })
  seq!: number;

  @Field(() => String)
  type!: string;

  @Field(() => GraphQLJSONObject)
  data!: Record<string, unknown>;

  @Field(() => Boolean, { description: "True on the job's final event (the subscription goes on)" })
  terminal!: boolean;

  @Field(() => Date)
  createdAt!: Date;
}

@ObjectType("InferenceEdge")
class InferenceEdgeType {
  @Field(() => String)
  cursor!: string;

  @Field(() => InferenceType)
  node!: InferenceType;
}

@ObjectType("InferenceConnection")
class InferenceConnectionType {
  @Field(() => [InferenceEdgeType])
  edges!: InferenceEdgeType[];

  @Field(() => PageInfoType)
  pageInfo!: PageInfoType;
}

@ObjectType("InferenceCreation")
class InferenceCreationType {
  @Field(() => InferenceType)
  inference!: InferenceType;

  @Field(() => String, { nullable: true, description: "Two-step form: PUT the WebUI parameters (api_param.json) here, then startInference" })
  paramsUploadUrl!: string | null;

  @Field(() => Boolean, { description: "True when an earlier request with the same idempotency key made this job" })
  replayed!: boolean;
}

@ObjectType("InferenceCancellation")
class InferenceCancellationType {
  @Field(() => InferenceType)
  inference!: InferenceType;

  @Field(() => Boolean, { description: "False when the job had already finished" })
  cancelled!: boolean;

  @Field(() => String, { description: "What happened; for a dispatched job, that compute may still be spent" })
  message!: string;
}

@InputType()
class CreateInferenceInput {
  @Field(() => String)
  taskType!: string;

  @Field(() => String)
  endpointName!: string;

  @Field(() => GraphQLJSONObject, { nullable: true, description: "{<checkpoint type>: [file name, …]}" })
  models?: Record<string, unknown>;

  @Field(() => GraphQLJSONObject, { nullable: true, description: "The WebUI parameters (one shot: queued at once). Omit for the two-step form." })
  parameters?: Record<string, unknown>;
}

@InputType()
class InferenceFilter {
  @Field(() => [String], { nullable: true })
  statuses?: string[];

  @Field(() => [String], { nullable: true })
  taskTypes?: string[];

  @Field(() => String, { nullable: true })
  endpointName?: string;

  @Field(() => Date, { nullable: true })
  createdAfter?: Date;

  @Field(() => Date, { nullable: true })
  createdBefore?: Date;

  @Field(() => String, { nullable: true, description: "Another user's jobs (needs inference:all)" })
  username?: string;
}

const toType = (v: InferenceView) => Object.assign(new InferenceType(), v, { view: v });

@Resolver(() => InferenceType)
export class InferenceResolver {
  @FieldResolver(() => [String], { description: "Presigned GET URLs of the result images (1 hour)" })
  async imageUrls(@Ctx() ctx: GraphQLContext, @Root() i: InferenceType): Promise<string[]> {
    return (await ctx.runtime.inferences.resultUrls(i.view)).images;
  }

  @FieldResolver(() => String, { nullable: true, description: "Presigned GET URL of the parameter file (<id>_param.json)" })
  async paramsFileUrl(@Ctx() ctx: GraphQLContext, @Root() i: InferenceType): Promise<string | null> {
    return (await ctx.runtime.inferences.resultUrls(i.view)).outputs[0] ?? null;
  }

  @FieldResolver(() => String, { nullable: true, description: "Presigned GET URL of the latest progress preview" })
  async previewUrl(@Ctx() ctx: GraphQLContext, @Root() i: InferenceType): Promise<string | null> {
    return i.view.previewKey ? ctx.runtime.inferences.presignKey(i.view.previewKey) : null;
  }

  @Query(() => InferenceType)
  async inference(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<InferenceType> {
    return toType(await ctx.runtime.inferences.view(await ctx.principal(), id));
  }

  @Query(() => InferenceConnectionType, { description: "The caller's inferences (everyone's with inference:all), newest first (keyset pagination)" })
  async inferences(
    @Ctx() ctx: GraphQLContext,
    @Arg("filter", () => InferenceFilter, { nullable: true }) filter?: InferenceFilter,
    @Arg("first", () => Int, { nullable: true, defaultValue: 50 }) first?: number,
    @Arg("after", () => String, { nullable: true }) after?: string,
  ): Promise<InferenceConnectionType> {
    const page = await ctx.runtime.inferences.list(await ctx.principal(), withoutNulls({ ...(filter ? withoutNulls({ ...filter }) : {}), first, after }));
    return Object.assign(new InferenceConnectionType(), {
      edges: page.items.map((i) => Object.assign(new InferenceEdgeType(), { cursor: encodeKeysetCursor(i), node: toType(i) })),
      pageInfo: Object.assign(new PageInfoType(), { hasNextPage: page.hasNextPage, endCursor: page.endCursor }),
    });
  }

  @Mutation(() => InferenceCreationType, { description: "Creates an inference: with parameters it is queued at once; without, PUT them to paramsUploadUrl and call startInference" })
  async createInference(
    @Ctx() ctx: GraphQLContext,
    @Arg("input", () => CreateInferenceInput) input: CreateInferenceInput,
    @Arg("idempotencyKey", () => String, { nullable: true }) idempotencyKey?: string,
  ): Promise<InferenceCreationType> {
    const out = await ctx.runtime.inferences.create(await ctx.principal(), withoutNulls({ ...input }), idempotencyKey ?? undefined);
    return Object.assign(new InferenceCreationType(), { inference: toType(out.inference), paramsUploadUrl: out.paramsUploadUrl ?? null, replayed: out.replayed });
  }

  @Mutation(() => InferenceType, { description: "Reads the uploaded parameters, checks them and queues the job (repeatable)" })
  async startInference(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<InferenceType> {
    return toType(await ctx.runtime.inferences.start(await ctx.principal(), id));
  }

  @Mutation(() => InferenceCancellationType)
  async cancelInference(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<InferenceCancellationType> {
    const out = await ctx.runtime.inferences.cancel(await ctx.principal(), id);
    return Object.assign(new InferenceCancellationType(), { ...out, inference: toType(out.inference) });
  }

  @Mutation(() => [ID], { description: "Deletes inferences and every object of them (all or none)" })
  async deleteInferences(@Ctx() ctx: GraphQLContext, @Arg("ids", () => [ID]) ids: string[]): Promise<string[]> {
    return ctx.runtime.inferences.delete(await ctx.principal(), ids);
  }

  @Subscription(() => JobEventType, {
    description: "created, queued (position), dispatched, progress (step, previewUrl), succeeded (imageUrls), failed (reason), cancelled — after `after`, then live",
    subscribe: async ({ args, context }: { args: { id: string; after?: number | null }; context: GraphQLContext }) =>
      context.runtime.inferences.follow(await context.principal(), args.id, args.after ?? 0),
  })
  async inferenceEvents(@Ctx() ctx: GraphQLContext, @Root() event: StoredEvent, @Arg("id", () => ID) _id: string, @Arg("after", () => Int, { nullable: true, defaultValue: 0 }) _after: number): Promise<JobEventType> {
    const out = toJobEventType(event);
    out.data = await withUrls(ctx, event.data);
    return out;
  }

  @Subscription(() => MyInferenceEventType, {
    description: "Every event of the caller's own inference jobs after `after` (a cursor of this subscription, 0 = from the start), then live ones, in order, without gaps or duplicates",
    subscribe: async ({ args, context }: { args: { after?: number | null }; context: GraphQLContext }) => context.runtime.inferences.followMine(await context.principal(), args.after ?? 0),
  })
  async myInferenceEvents(@Ctx() ctx: GraphQLContext, @Root() event: StoredEvent, @Arg("after", () => Int, { nullable: true, defaultValue: 0 }) _after: number): Promise<MyInferenceEventType> {
    const { inferenceId, inferenceSeq, inferenceTerminal, ...rest } = event.data;
    return Object.assign(new MyInferenceEventType(), {
      cursor: event.seq,
      inferenceId: String(inferenceId),
      seq: Number(inferenceSeq),
      type: event.type,
      data: await withUrls(ctx, rest),
      terminal: inferenceTerminal === true,
      createdAt: event.createdAt,
    });
  }
}

/** Keys are stored; URLs are presigned when read, so a replay gets fresh ones. */
async function withUrls(ctx: GraphQLContext, stored: Record<string, unknown>): Promise<Record<string, unknown>> {
  const data = { ...stored };
  if (typeof data.previewKey === "string") data.previewUrl = await ctx.runtime.inferences.presignKey(data.previewKey);
  if (Array.isArray(data.imageKeys)) data.imageUrls = await Promise.all((data.imageKeys as string[]).map((k) => ctx.runtime.inferences.presignKey(k)));
  if (typeof data.paramFileKey === "string") data.paramsFileUrl = await ctx.runtime.inferences.presignKey(data.paramFileKey);
  return data;
}
