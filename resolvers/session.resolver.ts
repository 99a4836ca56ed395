import { Arg, Ctx, Field, Mutation, ObjectType, Resolver } from "type-graphql";
import type { GraphQLContext } from "../src/graphql/context.js";
import { UserType } from "./user.resolver.js";

@ObjectType("Session")
export class SessionType {
  @Field(() => String, { description: "Send as Authorization: Bearer <token>, or as `token` in graphql-ws connection_init" })
  token!: string;

  @Field(() => Date)
  expiresAt!: Date;

  @Field(() => UserType)
  user!: UserType;
}

@Resolver()
export class SessionResolver {
  @Mutation(() => SessionType, { description: "Exchanges a username and password for a signed session token" })
  async login(@Ctx() ctx: GraphQLContext, @Arg("username", () => String) username: string, @Arg("password", () => String) password: string): Promise<SessionType> {
    const session = await ctx.runtime.access.login({ username, password });
    return Object.assign(new SessionType(), { ...session, user: Object.assign(new UserType(), session.user) });
  }
}
