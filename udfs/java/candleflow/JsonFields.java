package candleflow;

import java.util.List;
import java.util.Map;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * JSON_FIELDS(payload, 'a,b,c'): the payload parsed once, and each named top-level field's
 * text exactly as JSON_VALUE(payload, '$.a') returns it, so SQL rules can test many fields
 * without parsing the payload once per test (JSON_VALUE parses on every call).
 *
 * <p>Returns NULL when the payload is not a JSON object (as "payload IS JSON OBJECT" is
 * false); else an array of 2n strings: the n texts (NULL for null, absent, array or object),
 * then n kinds: "s" scalar, "n" null or absent, "c" an array or object. The text of a number
 * is java.math.BigDecimal's (1e2 -> 1E+2) and of an integer its digits (-0 -> 0), as the
 * built-in JSON functions print them. The last result is kept: the same payload asked again
 * in the same row (one call per rule) is not parsed again.
 */
public class JsonFields extends ScalarFunction {
    private static final ObjectMapper MAPPER = new ObjectMapper()
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS);

    private transient String lastPayload;
    private transient String lastNames;
    private transient String[] lastResult;

    public @DataTypeHint("ARRAY<STRING>") String[] eval(String payload, String names) {
        if (payload == null) {
            return null;
        }
        if (payload == lastPayload && names == lastNames) {
            return lastResult;
        }
        String[] result = parse(payload, names.split(","));
        lastPayload = payload;
        lastNames = names;
        lastResult = result;
        return result;
    }

    private static String[] parse(String payload, String[] fields) {
        Object root;
        try {
            // plain Java objects, as the built-in JSON functions' JsonPath provider reads
            // them: Integer/Long/BigInteger, exact BigDecimal, String, Boolean, Map, List
            root = MAPPER.readValue(payload, Object.class);
        } catch (Exception e) {
            return null;
        }
        if (!(root instanceof Map)) {
            return null;
        }
        Map<?, ?> obj = (Map<?, ?>) root;
        int n = fields.length;
        String[] out = new String[2 * n];
        for (int i = 0; i < n; i++) {
            Object v = obj.get(fields[i]);
            if (v == null) {
                out[n + i] = "n";
            } else if (v instanceof Map || v instanceof List) {
                out[n + i] = "c";
            } else {
                out[n + i] = "s";
                out[i] = String.valueOf(v);
            }
        }
        return out;
    }
}
