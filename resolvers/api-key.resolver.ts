import { Arg, Ctx, Field, ID, InputType, Mutation, ObjectType, Query, Resolver } from "type-graphql";
import { withoutNulls } from "../src/graphql/absent-inputs.js";
import type { GraphQLContext } from "../src/graphql/context.js";
import type { ApiKeyView } from "../src/services/access-service.js";

@ObjectType("ApiKey", { description: "An API key. Only its prefix is ever shown after creation." })
export class ApiKeyType {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;

  @Field(() => String, { description: "The first characters of the key" })
  prefix!: string;

  @Field(() => String, { description: "Username of the key's owner" })
  owner!: string;

  @Field(() => Boolean, { description: "Whether the WebUI extension's legacy hex-username bearer may name other users with this key" })
  actForOthers!: boolean;

  @Field(() => Date)
  createdAt!: Date;

  @Field(() => Date, { nullable: true })
  revokedAt!: Date | null;
}

@ObjectType("CreatedApiKey")
export class CreatedApiKeyType {
  @Field(() => String, { description: "The key itself. Shown once: store it now." })
  apiKey!: string;

  @Field(() => ApiKeyType)
  key!: ApiKeyType;
}

@InputType()
export class CreateApiKeyInput {
  @Field(() => String)
  name!: string;

  @Field(() => String, { nullable: true, description: "Owner of the key; another user's name needs user:all" })
  username?: string;

  @Field(() => Boolean, { nullable: true, description: "Allow the legacy bearer to act for other users (user:all only)" })
  actForOthers?: boolean;
}

const toType = (view: ApiKeyView) => Object.assign(new ApiKeyType(), view);

@Resolver(() => ApiKeyType)
export class ApiKeyResolver {
  @Query(() => [ApiKeyType], { description: "The caller's keys (every key with user:all)" })
  async apiKeys(@Ctx() ctx: GraphQLContext): Promise<ApiKeyType[]> {
    return (await ctx.runtime.access.listApiKeys(await ctx.principal())).map(toType);
  }

  @Mutation(() => CreatedApiKeyType)
  async createApiKey(@Ctx() ctx: GraphQLContext, @Arg("input", () => CreateApiKeyInput) input: CreateApiKeyInput): Promise<CreatedApiKeyType> {
    const { apiKey, key } = await ctx.runtime.access.createApiKey(await ctx.principal(), withoutNulls({ ...input }));
    return Object.assign(new CreatedApiKeyType(), { apiKey, key: toType(key) });
  }

  @Mutation(() => ApiKeyType)
  async revokeApiKey(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<ApiKeyType> {
    return toType(await ctx.runtime.access.revokeApiKey(await ctx.principal(), id));
  }
}
