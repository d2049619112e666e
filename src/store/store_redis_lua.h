/* The Lua scripts of the redis:// backend (store_redis_lua.c). */
#ifndef DS_STORE_REDIS_LUA_H
#define DS_STORE_REDIS_LUA_H

extern const char redis_lua_prelude[];
extern const char redis_lua_create[];
extern const char redis_lua_apply[];
extern const char redis_lua_claim[];
extern const char redis_lua_settle[];
extern const char redis_lua_requeue[];
extern const char redis_lua_remove[];
extern const char redis_lua_expire[];

#endif
