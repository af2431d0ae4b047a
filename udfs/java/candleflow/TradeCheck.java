package candleflow;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.data.ArrayData;
import org.apache.flink.table.data.GenericArrayData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * TRADE_CHECK(payload, contract): the trade contract applied to one record, from one parse.
 *
 * <p>{@code contract} is the rule table of udfs/trade_contract.py as JSON (rendered by
 * {@code contract_json()}; this class only interprets it, it defines no rule). The result is
 * an array of n + 1 strings: each field's text exactly as JSON_VALUE(payload, '$.field')
 * returns it (NULL for null, absent, an array or an object), then the reason of the first
 * failing rule, NULL when the trade is valid. A payload that is not a JSON object has every
 * text NULL and the reason "not a JSON object".
 *
 * <p>The rules are evaluated as {@code check()} in trade_contract.py does; a corpus test sends
 * the same payloads through both and asserts the same verdicts. A number's text is
 * java.math.BigDecimal's (1e2 -> 1E+2) and an integer's its digits (-0 -> 0), as the
 * built-in JSON functions print them. "max_future" compares with the wall clock in whole
 * seconds, as UNIX_TIMESTAMP() does.
 *
 * <p>The last result is kept: the job reads the same record's check in several places
 * (event time at the source, the reason, the fields), and each call after the first returns
 * the same internal array (bridgedTo ArrayData, so no per-call conversion of the strings).
 */
public class TradeCheck extends ScalarFunction {
    private static final ObjectMapper MAPPER = new ObjectMapper()
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS);

    private static final class Rule {
        final int field;
        final String kind;
        final StringData reason;
        final Pattern pattern;
        final long lo;
        final long hi;
        final List<String> oneOf;

        Rule(int field, String kind, StringData reason, Pattern pattern, long lo, long hi,
                List<String> oneOf) {
            this.field = field;
            this.kind = kind;
            this.reason = reason;
            this.pattern = pattern;
            this.lo = lo;
            this.hi = hi;
            this.oneOf = oneOf;
        }
    }

    private transient String contractText;
    private transient String[] fields;
    private transient boolean[] optional;
    private transient StringData[] notScalar;
    private transient StringData notAnObject;
    private transient long maxFutureMs;
    private transient Rule[] rules;

    private transient String lastPayload;
    private transient long lastNowS;
    private transient ArrayData lastResult;

    @Override
    public boolean isDeterministic() {
        return false; // the "max_future" rule reads the wall clock
    }

    public @DataTypeHint(value = "ARRAY<STRING>", bridgedTo = ArrayData.class) ArrayData eval(
            String payload, String contract) {
        if (contract != contractText && !contract.equals(contractText)) {
            load(contract);
            lastPayload = null;
        }
        long nowS = System.currentTimeMillis() / 1000;
        if (lastPayload != null && nowS == lastNowS
                && (payload == lastPayload || payload != null && payload.equals(lastPayload))) {
            return lastResult;
        }
        lastResult = check(payload, nowS);
        lastPayload = payload;
        lastNowS = nowS;
        return lastResult;
    }

    @SuppressWarnings("unchecked")
    private void load(String contract) {
        Map<String, Object> c;
        try {
            c = MAPPER.readValue(contract, Map.class);
        } catch (Exception e) {
            throw new IllegalArgumentException("TRADE_CHECK: contract is not JSON", e);
        }
        List<String> names = (List<String>) c.get("fields");
        Map<String, Object> opt = (Map<String, Object>) c.get("optional");
        fields = names.toArray(new String[0]);
        optional = new boolean[fields.length];
        notScalar = new StringData[fields.length];
        for (int i = 0; i < fields.length; i++) {
            optional[i] = opt.containsKey(fields[i]);
            notScalar[i] = StringData.fromString(fields[i] + " is not a scalar");
        }
        notAnObject = StringData.fromString((String) c.get("not_a_json_object"));
        maxFutureMs = ((Number) c.get("max_future_ms")).longValue();
        List<Map<String, Object>> rs = (List<Map<String, Object>>) c.get("rules");
        List<Rule> out = new ArrayList<>();
        for (Map<String, Object> r : rs) {
            String kind = (String) r.get("kind");
            Object arg = r.get("arg");
            Pattern pattern = null;
            long lo = 0;
            long hi = 0;
            List<String> oneOf = null;
            if (kind.equals("regex") || kind.equals("not_regex")) {
                pattern = Pattern.compile((String) arg);
            } else if (kind.equals("int_range")) {
                List<Number> range = (List<Number>) arg;
                lo = range.get(0).longValue();
                hi = range.get(1).longValue();
            } else if (kind.equals("one_of")) {
                oneOf = (List<String>) arg;
            } else if (!kind.equals("present") && !kind.equals("max_future")) {
                throw new IllegalArgumentException("TRADE_CHECK: unknown rule kind " + kind);
            }
            out.add(new Rule(names.indexOf((String) r.get("field")), kind,
                    StringData.fromString((String) r.get("reason")), pattern, lo, hi, oneOf));
        }
        rules = out.toArray(new Rule[0]);
        contractText = contract;
    }

    private ArrayData check(String payload, long nowS) {
        int n = fields.length;
        StringData[] out = new StringData[n + 1];
        Map<?, ?> obj = parseObject(payload);
        if (obj == null) {
            out[n] = notAnObject;
            return new GenericArrayData(out);
        }
        String[] texts = new String[n];
        boolean[] composite = new boolean[n];
        for (int i = 0; i < n; i++) {
            Object v = obj.get(fields[i]);
            if (v instanceof Map || v instanceof List) {
                composite[i] = true;
            } else if (v != null) {
                texts[i] = String.valueOf(v);
                out[i] = StringData.fromString(texts[i]);
            }
        }
        out[n] = firstFailure(texts, composite, nowS);
        return new GenericArrayData(out);
    }

    private StringData firstFailure(String[] texts, boolean[] composite, long nowS) {
        for (Rule rule : rules) {
            int f = rule.field;
            if (composite[f]) {
                return notScalar[f];
            }
            String text = texts[f];
            if (text == null) {
                if (optional[f]) {
                    continue;
                }
                return rule.reason;
            }
            boolean ok;
            switch (rule.kind) {
                case "present":
                    ok = true;
                    break;
                case "regex":
                    ok = rule.pattern.matcher(text).find();
                    break;
                case "not_regex":
                    ok = !rule.pattern.matcher(text).find();
                    break;
                case "int_range":
                    Long value = asLong(text);
                    ok = value != null && rule.lo <= value && value <= rule.hi;
                    break;
                case "max_future":
                    Long ts = asLong(text);
                    ok = (ts == null ? 0 : ts) <= nowS * 1000 + maxFutureMs;
                    break;
                default: // one_of
                    ok = rule.oneOf.contains(text);
            }
            if (!ok) {
                return rule.reason;
            }
        }
        return null;
    }

    /** An integer text's value (any number of leading zeros); null past 64 bits. */
    private static Long asLong(String text) {
        try {
            return Long.parseLong(text);
        } catch (NumberFormatException e) {
            return null;
        }
    }

    /** The payload's first JSON value if it is an object, as the built-in JSON functions'
     * JsonPath provider reads it (Integer/Long/BigInteger, exact BigDecimal, String,
     * Boolean, Map, List); null when "payload IS JSON OBJECT" is false. */
    private static Map<?, ?> parseObject(String payload) {
        if (payload == null) {
            return null;
        }
        Object root;
        try {
            root = MAPPER.readValue(payload, Object.class);
        } catch (Exception e) {
            return null;
        }
        return root instanceof Map ? (Map<?, ?>) root : null;
    }
}
