#!/usr/bin/env escript
%% -*- erlang -*-
%%! -noshell
%%
%% Edge cases of the EIR gateway judged by Erlang/OTP diameter, run by
%% tests/interop/test_erlang_edges.py. Unlike s13_mme.escript, the service leaves OTP's decode
%% options at their defaults (string_decode = true, strict_mbit = true, strict_arities = encode)
%% and both applications, the base one included, have answer_errors = callback: every answer of
%% the gateway reaches handle_answer/4 with the errors OTP's decoder found in it.
%%
%% The ECR grammar of s13.dia is loosened at load time ({ Terminal-Information } becomes
%% [ Terminal-Information ]) so OTP's encoder lets an ECR without it out; the ECA grammar, the one
%% that judges our answers, is unchanged.
%%
%% Usage: s13_mme_edges.escript S13_DIA HOST PORT SPEC_FILE
%%        s13_mme_edges.escript decode S13_DIA HEX_FILE
%% SPEC_FILE (file:consult/1), in order:
%%   {origin_host, "mme.otp.test"}.  {origin_realm, "otp.test"}.
%%   {watchdog_timer_ms, N}.        (optional: OTP's Tw, default 6000)
%%   {ecr, Label, Opts}.            Opts: {imei, S}, {sv, S}, {terminal, false}, {realm, S},
%%                                  {unknown_mbit, Code}  (an unknown AVP with the M bit)
%%   {cer, Label}.                  a second CER on the open connection (base application)
%%   {idle, Ms}.                    stay idle, then print OTP's per-peer statistics
%% The decode form decodes "LABEL HEX" lines with diameter_codec and the default options.
%% Output: one line per fact, tab-separated KEY=VALUE fields, values as Erlang terms (~0p).

-module(s13_mme_edges).
-mode(compile).

-export([main/1]).
-export([peer_up/3, peer_down/3, pick_peer/4, pick_peer/3, prepare_request/3,
         prepare_retransmit/3, handle_answer/4, handle_error/4, handle_request/3]).

-define(SVC, mme_edges).
-define(S13, 16777252).
-define(TGPP, 10415).

main(Args) ->
    try run(Args) of
        ok -> out(done, []), halt(0)
    catch
        Class:Reason:Stack ->
            out(crash, [{class, Class}, {reason, Reason}, {stack, Stack}]),
            halt(2)
    end.

run(["decode", Dia, HexFile]) ->
    load_dictionary(Dia),
    decode_file(HexFile);
run([Dia, Host, PortS, SpecFile]) ->
    load_dictionary(Dia),
    connect(Host, list_to_integer(PortS), SpecFile).

load_dictionary(Dia) ->
    {ok, Text} = file:read_file(Dia),
    Loose = binary:replace(Text, <<"{ Terminal-Information }">>, <<"[ Terminal-Information ]">>),
    true = Loose /= Text,
    File = "s13_edges.dia",
    ok = file:write_file(File, Loose),
    {ok, [Forms | _]} = diameter_make:codec(File, [forms, return]),
    {ok, s13, Beam} = compile:forms(Forms, [binary]),
    {module, s13} = code:load_binary(s13, "s13.erl", Beam),
    ok.

%% OTP's documented defaults, spelled out: string_decode true, strict_mbit true.
decode_file(HexFile) ->
    {ok, Text} = file:read_file(HexFile),
    Opts = #{decode_format => list, string_decode => true, strict_mbit => true,
             strict_arities => encode, rfc => 6733, failed_avp => false,
             incoming_maxlen => 16#FFFFFF, ordered_encode => false},
    lists:foreach(
      fun(Line) ->
              [Label, Hex] = binary:split(Line, <<" ">>),
              Bin = binary:decode_hex(Hex),
              <<_:4/binary, Flags, _:3/binary, AppId:32, _/binary>> = Bin,
              Mod = case AppId == 0 orelse Flags band 16#20 /= 0 of
                        true -> diameter_gen_base_rfc6733;
                        false -> s13
                    end,
              Pkt = diameter_codec:decode(Mod, Opts#{app_dictionary => Mod}, Bin),
              Name = case element(4, Pkt) of [N | _] -> N; Other -> Other end,
              out(decoded, [{label, binary_to_list(Label)}, {name, Name},
                            {errors, [error_code(E) || E <- element(6, Pkt)]},
                            {msg, element(4, Pkt)}])
      end,
      binary:split(Text, <<"\n">>, [global, trim_all])),
    ok.

error_code({Code, Avp}) when is_tuple(Avp) -> {Code, element(7, Avp), element(2, Avp)};
error_code(Other) -> Other.

connect(Host, Port, SpecFile) ->
    {ok, Spec} = file:consult(SpecFile),
    OH = proplists:get_value(origin_host, Spec),
    OR = proplists:get_value(origin_realm, Spec),
    ok = diameter:start(),
    true = diameter:subscribe(?SVC),
    Caps = [{'Origin-Host', OH}, {'Origin-Realm', OR},
            {'Host-IP-Address', [{127,0,0,1}]},
            {'Vendor-Id', 0}, {'Product-Name', "OTP diameter MME"},
            {'Auth-Application-Id', [?S13]},
            {'Supported-Vendor-Id', [?TGPP]}],
    ok = diameter:start_service(?SVC,
           Caps ++ [{decode_format, list},
            {application, [{alias, common}, {dictionary, diameter_gen_base_rfc6733},
                           {module, ?MODULE}, {answer_errors, callback}]},
            {application, [{alias, s13}, {dictionary, s13}, {module, ?MODULE},
                           {answer_errors, callback}]}]),
    {ok, Addr} = inet:parse_address(Host),
    {ok, Ref} = diameter:add_transport(?SVC,
           {connect, [{transport_module, diameter_tcp},
                      {transport_config, [{raddr, Addr}, {rport, Port},
                                          {ip, {127,0,0,1}}, {reuseaddr, true}]},
                      {watchdog_timer, proplists:get_value(watchdog_timer_ms, Spec, 6000)},
                      {dpa_timeout, 5000},
                      {connect_timer, 30000}]}),
    case wait_up(Ref, 8000) of
        ok ->
            lists:foreach(fun(Step) -> step(OH, OR, Step) end, Spec),
            statistics(),
            T0 = erlang:monotonic_time(millisecond),
            ok = diameter:remove_transport(?SVC, Ref),
            wait_down(Ref, 8000),
            out(disconnected, [{ms, erlang:monotonic_time(millisecond) - T0}]),
            diameter:stop_service(?SVC),
            ok;
        failed ->
            ok
    end.

wait_up(Ref, Timeout) ->
    receive
        {diameter_event, ?SVC, {up, Ref, _Peer, _Config, Pkt}} ->
            out(cea, [{msg, element(4, Pkt)}, {errors, element(6, Pkt)}]),
            ok;
        {diameter_event, ?SVC, {closed, Ref, Reason, _Config}} ->
            out(cea_failed, [{reason, Reason}]),
            failed;
        {diameter_event, ?SVC, Info} ->
            out(event, [{info, Info}]),
            wait_up(Ref, Timeout)
    after Timeout ->
            out(cea_timeout, []),
            failed
    end.

wait_down(Ref, Timeout) ->
    receive
        {diameter_event, ?SVC, {down, Ref, _Peer, _Config}} -> out(down, []);
        {diameter_event, ?SVC, Info} -> out(event, [{info, Info}]), wait_down(Ref, Timeout)
    after Timeout -> out(down_timeout, [])
    end.

%% Events that arrived meanwhile (a watchdog going suspect, a reconnection) are printed.
drain_events() ->
    receive
        {diameter_event, ?SVC, Info} -> out(event, [{info, Info}]), drain_events()
    after 0 -> ok
    end.

step(OH, OR, {ecr, Label, Opts}) ->
    ecr(OH, OR, Label, Opts),
    drain_events();
step(OH, OR, {cer, Label}) ->
    Req = ['CER', {'Origin-Host', OH}, {'Origin-Realm', OR},
           {'Host-IP-Address', [{127,0,0,1}]}, {'Vendor-Id', 0},
           {'Product-Name', "OTP diameter MME"}, {'Auth-Application-Id', [?S13]},
           {'Supported-Vendor-Id', [?TGPP]}],
    answer(Label, diameter:call(?SVC, common, Req, [{timeout, 5000}])),
    drain_events();
step(_, _, {idle, Ms}) ->
    timer:sleep(Ms),
    statistics(),
    drain_events();
step(_, _, _) ->
    ok.

ecr(OH, OR, Label, Opts) ->
    Imei = proplists:get_value(imei, Opts, "35209900123456"),
    Sv = proplists:get_value(sv, Opts),
    Terminal = [{'IMEI', [Imei]} || Imei /= undefined]
               ++ [{'Software-Version', [Sv]} || Sv /= undefined],
    Extra = case proplists:get_value(unknown_mbit, Opts) of
                undefined -> [];
                Code -> [{'AVP', [{diameter_avp, Code, undefined, true, false, <<"abcd">>,
                                   undefined, undefined, undefined, undefined}]}]
            end,
    Req = ['ECR',
           {'Session-Id', diameter:session_id(OH)},
           {'Auth-Session-State', 1},
           {'Origin-Host', OH},
           {'Origin-Realm', OR},
           {'Destination-Realm', proplists:get_value(realm, Opts, "localdomain")},
           {'Vendor-Specific-Application-Id',
            [[{'Vendor-Id', ?TGPP}, {'Auth-Application-Id', [?S13]}]]}]
          ++ [{'Terminal-Information', [Terminal]} || proplists:get_value(terminal, Opts, true)]
          ++ Extra,
    answer(Label, diameter:call(?SVC, s13, Req, [{timeout, 5000}])).

answer(Label, {answer, Hdr, [Name | Avps] = Msg, Errors}) ->
    out(answer, [{label, Label}, {name, Name}, {flags, flags(Hdr)},
                 {result_code, value('Result-Code', Avps)},
                 {experimental, experimental(value('Experimental-Result', Avps))},
                 {status, value('Equipment-Status', Avps)},
                 {failed, failed(value('Failed-AVP', Avps))},
                 {errors, [error_code(E) || E <- Errors]}, {msg, Msg}]);
answer(Label, Other) ->
    out(answer_error, [{label, Label}, {result, Other}]).

value(Name, Avps) ->
    case proplists:get_value(Name, Avps) of
        undefined -> none;
        [] -> none;
        [V] -> V;
        V -> V
    end.

experimental(none) -> none;
experimental(Group) ->
    {proplists:get_value('Vendor-Id', Group), proplists:get_value('Experimental-Result-Code', Group)}.

%% Failed-AVP ::= 1* {AVP}: each AVP it holds as {Code, Vendor, Name, Data}.
failed(none) -> none;
failed(Group) ->
    [{element(2, A), element(3, A), element(7, A), element(6, A)}
     || A <- lists:flatten(proplists:get_value('AVP', Group, []))].

flags(Hdr) ->
    [F || {F, true} <- [{request, element(8, Hdr)}, {proxiable, element(9, Hdr)},
                        {error, element(10, Hdr)}, {retransmit, element(11, Hdr)}]].

statistics() ->
    lists:foreach(
      fun({_Ref, Counters}) -> [out(stat, [{key, K}, {value, V}]) || {K, V} <- Counters];
         (Other) -> out(stat_other, [{term, Other}])
      end,
      diameter:service_info(?SVC, statistics)).

out(Tag, Fields) ->
    io:format("~s~ts~n", [Tag, [io_lib:format("\t~s=~0tp", [K, V]) || {K, V} <- Fields]]).

%% -- diameter_app callbacks -------------------------------------------------------------------

peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _Remote, _Svc, _State) -> {ok, Peer};
pick_peer([], _Remote, _Svc, _State) -> false.
pick_peer([Peer | _], _Svc, _State) -> {ok, Peer};
pick_peer([], _Svc, _State) -> false.
prepare_request(Pkt, _Svc, _Peer) -> {send, Pkt}.
prepare_retransmit(Pkt, _Svc, _Peer) -> {send, Pkt}.
handle_answer(Pkt, _Request, _Svc, _Peer) ->
    {answer, element(2, Pkt), element(4, Pkt), element(6, Pkt)}.
handle_error(Reason, _Request, _Svc, _Peer) -> {error, Reason}.
handle_request(_Pkt, _Svc, _Peer) -> {answer_message, 3001}.
