#!/usr/bin/env escript
%%! +S 1:1 +sbwt none
%% The runtime under glisten and ThousandIsland: gen_tcp with an acceptor
%% pool of 10, a process per connection, as ThousandIsland does. One
%% scheduler (+S 1:1), like the other servers' one core; no busy waiting.
%%   escript bench/echo_erlang.erl PORT
-module(echo_erlang).
-mode(compile).
-export([main/1]).

main([PortArg]) ->
    {ok, L} = gen_tcp:listen(list_to_integer(PortArg),
        [binary, {ip, {127,0,0,1}}, {active, false}, {reuseaddr, true},
         {nodelay, true}, {backlog, 1024}]),
    {ok, Port} = inet:port(L),
    io:format(standard_error, "listening on 127.0.0.1:~p~n", [Port]),
    [spawn(fun() -> acceptor(L) end) || _ <- lists:seq(1, 10)],
    receive stop -> ok end.

acceptor(L) ->
    {ok, S} = gen_tcp:accept(L),
    Pid = spawn(fun() -> receive go -> loop(S) end end),
    ok = gen_tcp:controlling_process(S, Pid),
    Pid ! go,
    acceptor(L).

loop(S) ->
    case gen_tcp:recv(S, 0) of
        {ok, Data} -> gen_tcp:send(S, Data), loop(S);
        _ -> gen_tcp:close(S)
    end.
