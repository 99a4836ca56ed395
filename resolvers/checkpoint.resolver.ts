import { Arg, Ctx, Field, Float, ID, InputType, Int, Mutation, ObjectType, Query, Resolver, Root, Subscription } from "type-graphql";
import { withoutNulls } from "../src/graphql/absent-inputs.js";
import { encodeKeysetCursor } from "../src/domain/keyset-cursor.js";
import type { GraphQLContext } from "../src/graphql/context.js";
import type { StoredEvent } from "../src/domain/events.js";
import type { CheckpointView, UploadTicket } from "../src/services/checkpoint-service.js";
import { JobEventType, toJobEventType } from "./job-event.resolver.js";

@ObjectType("CheckpointFile")
export class CheckpointFileType {
  @Field(() => String)
  name!: string;

  @Field(() => String, { description: "Object key in the bucket" })
  key!: string;

  @Field(() => Int)
  partsNumber!: number;

  @Field(() => Float, { nullable: true, description: "Bytes, once they are really in the store" })
  sizeBytes!: number | null;

  @Field(() => String, { nullable: true })
  sourceUrl!: string | null;
}

@ObjectType("Checkpoint", { description: "A model file set (Stable-diffusion, embeddings, Lora, hypernetworks, ControlNet, VAE)" })
export class CheckpointType {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  type!: string;

  @Field(() => String, { description: "Initial, Active, Disabled or Failed" })
  status!: string;

  @Field(() => String, { description: "upload or url" })
  source!: string;

  @Field(() => String, { nullable: true })
  message!: string | null;

  @Field(() => String, { nullable: true })
  creator!: string | null;

  @Field(() => [String], { description: "Roles it is shared with" })
  allowedRoles!: string[];

  @Field(() => String, { nullable: true })
  failureReason!: string | null;

  @Field(() => [CheckpointFileType])
  files!: CheckpointFileType[];

  @Field(() => Date)
  createdAt!: Date;
}

@ObjectType("CheckpointEdge")
class CheckpointEdgeType {
  @Field(() => String)
  cursor!: string;

  @Field(() => CheckpointType)
  node!: CheckpointType;
}

@ObjectType("PageInfo")
export class PageInfoType {
  @Field(() => Boolean)
  hasNextPage!: boolean;

  @Field(() => String, { nullable: true })
  endCursor!: string | null;
}

@ObjectType("CheckpointConnection")
class CheckpointConnectionType {
  @Field(() => [CheckpointEdgeType])
  edges!: CheckpointEdgeType[];

  @Field(() => PageInfoType)
  pageInfo!: PageInfoType;
}

@ObjectType("CheckpointUploadTicket", { description: "Where to PUT each part of one file; collect each response's ETag" })
class UploadTicketType {
  @Field(() => String)
  fileName!: string;

  @Field(() => String)
  key!: string;

  @Field(() => String)
  uploadId!: string;

  @Field(() => [String], { description: "Presigned UploadPart URLs, part 1 first" })
  partUrls!: string[];
}

@ObjectType("CheckpointUpload")
class CheckpointUploadType {
  @Field(() => CheckpointType)
  checkpoint!: CheckpointType;

  @Field(() => [UploadTicketType])
  uploads!: UploadTicketType[];
}

@InputType()
class CheckpointFileInput {
  @Field(() => String)
  name!: string;

  @Field(() => Int, { description: "1-10000 parts; each but the last at least 5 MiB" })
  partsNumber!: number;

  @Field(() => Float, { nullable: true, description: "File size, to check the part count up front" })
  sizeBytes?: number;
}

@InputType()
class CreateCheckpointUploadInput {
  @Field(() => String)
  type!: string;

  @Field(() => [CheckpointFileInput])
  files!: CheckpointFileInput[];

  @Field(() => String, { nullable: true })
  message?: string;
}

@InputType()
class CompletedFileInput {
  @Field(() => String)
  name!: string;

  @Field(() => [String], { description: "The ETag of each part, part 1 first" })
  etags!: string[];
}

@InputType()
class ImportCheckpointInput {
  @Field(() => String)
  type!: string;

  @Field(() => [String])
  urls!: string[];

  @Field(() => String, { nullable: true })
  message?: string;
}

@InputType()
class CheckpointFilter {
  @Field(() => [String], { nullable: true })
  statuses?: string[];

  @Field(() => [String], { nullable: true })
  types?: string[];
}

const toType = (v: CheckpointView) => Object.assign(new CheckpointType(), v, { files: v.files.map((f) => Object.assign(new CheckpointFileType(), f)) });
const toTicket = (t: UploadTicket) => Object.assign(new UploadTicketType(), t);

@Resolver(() => CheckpointType)
export class CheckpointResolver {
  @Query(() => CheckpointConnectionType, { description: "Checkpoints the caller may see, newest first (keyset pagination)" })
  async checkpoints(
    @Ctx() ctx: GraphQLContext,
    @Arg("filter", () => CheckpointFilter, { nullable: true }) filter?: CheckpointFilter,
    @Arg("first", () => Int, { nullable: true, defaultValue: 50 }) first?: number,
    @Arg("after", () => String, { nullable: true }) after?: string,
  ): Promise<CheckpointConnectionType> {
    const page = await ctx.runtime.checkpoints.list(await ctx.principal(), withoutNulls({ ...(filter ? withoutNulls({ ...filter }) : {}), first, after }));
    const { items } = page;
    return Object.assign(new CheckpointConnectionType(), {
      edges: items.map((c) => Object.assign(new CheckpointEdgeType(), { cursor: encodeKeysetCursor(c), node: toType(c) })),
      pageInfo: Object.assign(new PageInfoType(), { hasNextPage: page.hasNextPage, endCursor: page.endCursor }),
    });
  }

  @Query(() => CheckpointType)
  async checkpoint(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<CheckpointType> {
    return toType(await ctx.runtime.checkpoints.view(await ctx.principal(), id));
  }

  @Mutation(() => CheckpointUploadType, { description: "Starts a multipart upload per file; PUT the parts to the URLs, then completeCheckpointUpload" })
  async createCheckpointUpload(@Ctx() ctx: GraphQLContext, @Arg("input", () => CreateCheckpointUploadInput) input: CreateCheckpointUploadInput): Promise<CheckpointUploadType> {
    const { checkpoint, uploads } = await ctx.runtime.checkpoints.createUpload(await ctx.principal(), withoutNulls({ ...input, files: input.files.map((f) => withoutNulls({ ...f })) }));
    return Object.assign(new CheckpointUploadType(), { checkpoint: toType(checkpoint), uploads: uploads.map(toTicket) });
  }

  @Mutation(() => CheckpointType, { description: "Completes the uploads with the parts' ETags and activates the checkpoint (repeatable)" })
  async completeCheckpointUpload(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string, @Arg("files", () => [CompletedFileInput]) files: CompletedFileInput[]): Promise<CheckpointType> {
    return toType(await ctx.runtime.checkpoints.completeUpload(await ctx.principal(), id, Object.fromEntries(files.map((f) => [f.name, f.etags]))));
  }

  @Mutation(() => CheckpointType, { description: "Imports files from http(s) URLs in the background; follow with checkpointEvents" })
  async importCheckpoint(@Ctx() ctx: GraphQLContext, @Arg("input", () => ImportCheckpointInput) input: ImportCheckpointInput): Promise<CheckpointType> {
    return toType(await ctx.runtime.checkpoints.importFromUrls(await ctx.principal(), withoutNulls({ ...input })));
  }

  @Mutation(() => CheckpointType, { description: "Renames an Active single-file checkpoint, keeping the extension" })
  async renameCheckpoint(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string, @Arg("name", () => String) name: string): Promise<CheckpointType> {
    return toType((await ctx.runtime.checkpoints.rename(await ctx.principal(), id, name)).checkpoint);
  }

  @Mutation(() => CheckpointType, { description: "Active or Disabled" })
  async setCheckpointStatus(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string, @Arg("status", () => String) status: string): Promise<CheckpointType> {
    return toType(await ctx.runtime.checkpoints.setStatus(await ctx.principal(), id, status));
  }

  @Mutation(() => [ID], { description: "Deletes checkpoints and every object under them (all or none)" })
  async deleteCheckpoints(@Ctx() ctx: GraphQLContext, @Arg("ids", () => [ID]) ids: string[]): Promise<string[]> {
    return ctx.runtime.checkpoints.delete(await ctx.principal(), ids);
  }

  @Subscription(() => JobEventType, {
    description: "Status changes, renames and import progress of a checkpoint after `after`, then live ones",
    subscribe: async ({ args, context }: { args: { id: string; after?: number | null }; context: GraphQLContext }) =>
      context.runtime.checkpoints.follow(await context.principal(), args.id, args.after ?? 0),
  })
  checkpointEvents(@Root() event: StoredEvent, @Arg("id", () => ID) _id: string, @Arg("after", () => Int, { nullable: true, defaultValue: 0 }) _after: number): JobEventType {
    return toJobEventType(event);
  }
}
